{{/* Pod-level settings shared by the relay's and the sink's Deployments. */}}
{{- define "outbox-relay.podCommon" -}}
serviceAccountName: {{ include "outbox-relay.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- /* The relay's whole way out (reading to a commit, Kafka's acknowledgements, the last status update) is bounded
by one shutdown_timeout_ms from SIGTERM; the pod must be given longer, or Kubernetes SIGKILLs it midway. */}}
{{- if le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) (add (int64 .Values.shutdownTimeoutMs) 5000) }}
{{- fail (printf "terminationGracePeriodSeconds (%d s) must exceed shutdownTimeoutMs (%d ms) by more than 5 s, or Kubernetes kills a stopping relay before it confirmed what Kafka acknowledged" (int64 .Values.terminationGracePeriodSeconds) (int64 .Values.shutdownTimeoutMs)) }}
{{- end }}
terminationGracePeriodSeconds: {{ int64 .Values.terminationGracePeriodSeconds }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
