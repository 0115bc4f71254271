{{/*
The relay container and the volumes it needs. The chart's Deployment uses these, and so can another chart that
runs the relay as a sidecar of its own pod (see "outbox-relay.sidecar.container" below and the chart README).
*/}}
{{- define "outbox-relay.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "outbox-relay.container" -}}
- name: {{ include "outbox-relay.containerName" . }}
  image: {{ include "outbox-relay.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/usr/local/bin/outbox-relay", "--config", "{{ include "outbox-relay.configDir" . }}/relay.toml"]
  ports:
    - name: {{ include "outbox-relay.portName" . }}
      containerPort: {{ int64 .Values.metrics.port }}
      protocol: TCP
  {{- if or .Values.secretEnv .Values.env }}
  env:
    {{- range $name, $ref := .Values.secretEnv }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.name | quote }}
          key: {{ $ref.key | quote }}
    {{- end }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ include "outbox-relay.portName" . }}
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ include "outbox-relay.portName" . }}
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "outbox-relay.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: outbox-relay-config
      mountPath: {{ include "outbox-relay.configDir" . }}
      readOnly: true
    {{- if include "outbox-relay.hasSecrets" . }}
    - name: outbox-relay-secrets
      mountPath: {{ include "outbox-relay.secretsDir" . }}
      readOnly: true
    {{- end }}
{{- end }}

{{- define "outbox-relay.containerName" -}}
{{- if eq .Values.mode "sidecar" }}{{ .Values.sidecar.containerName }}{{ else }}outbox-relay{{ end }}
{{- end }}

{{- define "outbox-relay.portName" -}}
{{- if eq .Values.mode "sidecar" }}{{ .Values.sidecar.portName }}{{ else }}metrics{{ end }}
{{- end }}

{{- define "outbox-relay.hasSecrets" -}}
{{- $tls := .Values.source.tls | default dict -}}
{{- if or .Values.source.passwordSecret .Values.kafka.secretFiles $tls.caSecret $tls.clientCertSecret }}true{{ end }}
{{- end }}

{{- define "outbox-relay.volumes" -}}
- name: outbox-relay-config
  configMap:
    name: {{ include "outbox-relay.configMapName" . }}
    items:
      - key: relay.toml
        path: relay.toml
{{- if include "outbox-relay.hasSecrets" . }}
# Secrets come from existing Secrets by name, never from values: one projected volume, a file per secret.
- name: outbox-relay-secrets
  projected:
    sources:
      {{- with .Values.source.passwordSecret }}
      - secret:
          name: {{ .name | quote }}
          items:
            - key: {{ .key | quote }}
              path: source/password
      {{- end }}
      {{- with (.Values.source.tls | default dict).caSecret }}
      - secret:
          name: {{ .name | quote }}
          items:
            - key: {{ .key | quote }}
              path: source/ca.crt
      {{- end }}
      {{- with (.Values.source.tls | default dict).clientCertSecret }}
      # libpq refuses a key readable by others: 0640, owned by root, readable by the pod's fsGroup.
      - secret:
          name: {{ .name | quote }}
          items:
            - key: {{ .certKey | default "tls.crt" | quote }}
              path: source/tls.crt
            - key: {{ .keyKey | default "tls.key" | quote }}
              path: source/tls.key
              mode: 0640
      {{- end }}
      {{- range $property, $ref := .Values.kafka.secretFiles }}
      - secret:
          name: {{ $ref.name | quote }}
          items:
            - key: {{ $ref.key | quote }}
              path: kafka/{{ $property }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
Sidecar mode: include these from another chart's pod template, with a context whose .Values are this chart's
values (as a dependency, `index .Values "outbox-relay"`) and whose .Release is the release:

  containers:
    - name: app
      ...
    {{- include "outbox-relay.sidecar.container" (dict "Values" (index .Values "outbox-relay") "Release" .Release "Chart" .Chart) | nindent 4 }}
  volumes:
    {{- include "outbox-relay.sidecar.volumes" (dict "Values" (index .Values "outbox-relay") "Release" .Release "Chart" .Chart) | nindent 4 }}

The ConfigMap they mount is rendered by this chart (as a dependency with mode: sidecar).
Each renders a YAML list (items starting with "- ").
*/}}
{{- define "outbox-relay.sidecar.container" -}}
{{- include "outbox-relay.container" . }}
{{- end }}

{{- define "outbox-relay.sidecar.volumes" -}}
{{- include "outbox-relay.volumes" . }}
{{- end }}
