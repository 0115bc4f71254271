{{/*
Names. They use the constant "outbox-relay" rather than .Chart.Name so that the sidecar templates, included from
another chart with that chart's context, compute the same names (the ConfigMap's above all) as this chart does.
*/}}
{{- define "outbox-relay.name" -}}
{{- default "outbox-relay" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outbox-relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "outbox-relay.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "outbox-relay.sinkFullname" -}}
{{- printf "%s-sink" (include "outbox-relay.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{- define "outbox-relay.configMapName" -}}
{{- printf "%s-config" (include "outbox-relay.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "outbox-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "outbox-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "outbox-relay.image" -}}
{{- /* In sidecar mode .Chart is the including chart's (or absent), so its appVersion is not ours. */}}
{{- $ours := and .Chart (eq .Chart.Name "outbox-relay") }}
{{- $tag := .Values.image.tag }}
{{- if and (not $tag) (not .Values.image.digest) }}
{{- if $ours }}{{ $tag = .Chart.AppVersion }}{{ end }}
{{- $tag = $tag | required "outbox-relay: set image.tag (or image.digest); included as a sidecar, the chart's appVersion is not known" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "outbox-relay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "outbox-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | default "unknown" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "outbox-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Where secrets are mounted; password_file and [kafka.secret_files] point below it. */}}
{{- define "outbox-relay.secretsDir" -}}/var/run/secrets/outbox-relay{{- end }}
{{- define "outbox-relay.configDir" -}}/etc/outbox-relay{{- end }}

{{/* A TOML basic string: JSON string escapes are a subset of TOML's. */}}
{{- define "outbox-relay.tomlString" -}}
{{- toJson (toString .) }}
{{- end }}

{{/* A TOML table of string values from a map, keys quoted (librdkafka property names hold dots). */}}
{{- define "outbox-relay.tomlStringMap" -}}
{{- range $k, $v := . }}
{{ include "outbox-relay.tomlKey" $k }} = {{ include "outbox-relay.tomlString" $v }}
{{- end }}
{{- end }}

{{/*
source.conninfo with source.tls's sslmode and the mounted CA (sslrootcert) and client certificate (sslcert, sslkey):
key=value pairs appended to a key=value conninfo, query parameters to a URI.
*/}}
{{- define "outbox-relay.conninfo" -}}
{{- $s := .Values.source -}}
{{- $tls := $s.tls | default dict -}}
{{- $dir := printf "%s/source" (include "outbox-relay.secretsDir" .) -}}
{{- if regexMatch "(^|[[:space:]?&])ssl(mode|rootcert|cert|key)=" $s.conninfo -}}
{{- fail "source.conninfo sets sslmode, sslrootcert, sslcert or sslkey: set them with source.tls (sslmode, caSecret, clientCertSecret) instead" -}}
{{- end -}}
{{- $mode := $tls.sslmode | default "verify-full" -}}
{{- if and (has $mode (list "verify-ca" "verify-full")) (not $tls.caSecret) -}}
{{- fail (printf "source.tls.sslmode %s needs source.tls.caSecret: the Secret holding the CA that issued the PostgreSQL server's certificate" $mode) -}}
{{- end -}}
{{- $params := list (printf "sslmode=%s" $mode) -}}
{{- if $tls.caSecret -}}{{- $params = append $params (printf "sslrootcert=%s/ca.crt" $dir) -}}{{- end -}}
{{- if $tls.clientCertSecret -}}
{{- $params = append $params (printf "sslcert=%s/tls.crt" $dir) -}}
{{- $params = append $params (printf "sslkey=%s/tls.key" $dir) -}}
{{- end -}}
{{- if regexMatch "^postgres(ql)?://" $s.conninfo -}}
{{ $s.conninfo }}{{ if contains "?" $s.conninfo }}&{{ else }}?{{ end }}{{ join "&" $params }}
{{- else -}}
{{ $s.conninfo }} {{ join " " $params }}
{{- end -}}
{{- end }}

{{/* The relay's TOML (see examples/relay.toml and README "Configuration"), from the structured values. */}}
{{- define "outbox-relay.relayToml" -}}
{{- $v := .Values -}}
# Rendered by the outbox-relay Helm chart from its values; ${VAR} expands from the container's environment.
{{- if $v.deadLetterTopic }}
dead_letter_topic = {{ include "outbox-relay.tomlString" $v.deadLetterTopic }}
{{- end }}
shutdown_timeout_ms = {{ int64 $v.shutdownTimeoutMs }}

[log]
level = {{ include "outbox-relay.tomlString" $v.log.level }}
format = {{ include "outbox-relay.tomlString" $v.log.format }}

[source]
conninfo = {{ include "outbox-relay.tomlString" (include "outbox-relay.conninfo" .) }}
{{- with $v.source.passwordSecret }}
password_file = {{ printf "%s/source/password" (include "outbox-relay.secretsDir" $) | quote }}
{{- end }}
slot = {{ include "outbox-relay.tomlString" $v.source.slot }}
create_slot = {{ $v.source.createSlot }}
publication = {{ include "outbox-relay.tomlString" $v.source.publication }}
create_publication = {{ $v.source.createPublication }}
{{- range $key, $toml := dict "statusIntervalMs" "status_interval_ms" "reconnectBackoffMinMs" "reconnect_backoff_min_ms" "reconnectBackoffMaxMs" "reconnect_backoff_max_ms" "slotBusyRetryMs" "slot_busy_retry_ms" "lagPollIntervalMs" "lag_poll_interval_ms" }}
{{- if hasKey $v.source $key }}
{{ $toml }} = {{ int64 (index $v.source $key) }}
{{- end }}
{{- end }}
{{- if $v.source.failover }}
failover = true
{{- end }}
{{- with $v.source.onSlotLost }}
on_slot_lost = {{ include "outbox-relay.tomlString" . }}
{{- end }}

[kafka]
bootstrap_servers = {{ include "outbox-relay.tomlString" $v.kafka.bootstrapServers }}
{{- if $v.kafka.unsafeOverrides }}
unsafe_overrides = true
{{- end }}
{{- with $v.kafka.progressTopic }}
progress_topic = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- if eq ($v.kafka.delivery | default "at_least_once") "exactly_once" }}
delivery = "exactly_once"
{{- with $v.kafka.transactionalId }}
transactional_id = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- range $key, $toml := dict "transactionMaxEvents" "transaction_max_events" "transactionMaxBytes" "transaction_max_bytes" "transactionMaxMs" "transaction_max_ms" }}
{{- if hasKey $v.kafka $key }}
{{ $toml }} = {{ int64 (index $v.kafka $key) }}
{{- end }}
{{- end }}
{{- else if or $v.kafka.transactionalId (hasKey $v.kafka "transactionMaxEvents") (hasKey $v.kafka "transactionMaxBytes") (hasKey $v.kafka "transactionMaxMs") }}
{{- fail "kafka.transactionalId and transactionMax* apply only with kafka.delivery: exactly_once" }}
{{- end }}
{{- with $v.kafka.properties }}

[kafka.properties]
{{- include "outbox-relay.tomlStringMap" . }}
{{- end }}
{{- with $v.kafka.secretFiles }}

[kafka.secret_files]
{{- range $property, $_ := . }}
{{ toJson $property }} = {{ printf "%s/kafka/%s" (include "outbox-relay.secretsDir" $) $property | quote }}
{{- end }}
{{- end }}
{{- range $v.outbox }}

[[outbox]]
table = {{ include "outbox-relay.tomlString" .table }}
{{- with .topic }}
topic = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- $o := . }}
{{- range $key, $toml := dict "idColumn" "id_column" "aggregateTypeColumn" "aggregatetype_column" "aggregateIdColumn" "aggregateid_column" "typeColumn" "type_column" "payloadColumn" "payload_column" "keyColumn" "key_column" "partitionColumn" "partition_column" "timestampColumn" "timestamp_column" "tracingColumn" "tracing_column" "cloudevents" "cloudevents" "cloudeventsSource" "cloudevents_source" }}
{{- if hasKey $o $key }}
{{ $toml }} = {{ include "outbox-relay.tomlString" (index $o $key) }}
{{- end }}
{{- end }}
{{- with .headers }}
[outbox.headers]
{{- include "outbox-relay.tomlStringMap" . }}
{{- end }}
{{- with .envelope }}
[outbox.envelope]
{{- include "outbox-relay.tomlStringMap" . }}
{{- end }}
{{- end }}

[messages]
enabled = {{ $v.messages.enabled }}
{{- with $v.messages.prefix }}
prefix = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- with $v.messages.topic }}
topic = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- with $v.messages.nonTransactional }}
non_transactional = {{ include "outbox-relay.tomlString" . }}
{{- end }}
{{- if hasKey $v.messages "maxBytes" }}
max_bytes = {{ int64 $v.messages.maxBytes }}
{{- end }}
{{- with $v.messages.headers }}
[messages.headers]
{{- include "outbox-relay.tomlStringMap" . }}
{{- end }}

[limits]
max_inflight_events = {{ int64 $v.limits.maxInflightEvents }}
max_inflight_bytes = {{ int64 $v.limits.maxInflightBytes }}

[metrics]
# Always on in Kubernetes: the probes use /healthz and /readyz on this address.
enabled = true
listen = {{ printf "0.0.0.0:%d" (int64 $v.metrics.port) | quote }}
{{- end }}

{{/* The sink's TOML: sink.config passed through, with metrics.listen set from sink.metricsPort. */}}
{{- define "outbox-relay.sinkToml" -}}
{{- $config := deepCopy (.Values.sink.config | default dict) }}
{{- $metrics := get $config "metrics" | default dict }}
{{- $_ := set $metrics "listen" (printf "0.0.0.0:%d" (int64 .Values.sink.metricsPort)) }}
{{- $_ := set $config "metrics" $metrics -}}
# Rendered by the outbox-relay Helm chart from sink.config; ${VAR} expands from the container's environment.
{{- include "outbox-relay.toToml" $config }}
{{- end }}

{{/*
TOML from a map, for the sink's pass-through config. Helm's own toToml writes every number as a float (values
are read as float64), which an integer setting rejects; this writes whole numbers as integers.
Scalars and arrays of scalars first, then sub-tables, then arrays of tables ([[name]]).
Called with (dict "map" M "path" "a.b").
*/}}
{{- define "outbox-relay.toToml" -}}
{{- include "outbox-relay.tomlTable" (dict "map" . "path" "") }}
{{- end }}

{{- define "outbox-relay.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "outbox-relay.tomlValue" $e }}{{ end }}]
{{- else if kindIs "invalid" . }}{{ fail "sink.config: null values cannot be written as TOML; remove the key" }}
{{- else }}{{ fail (printf "sink.config: cannot write a %s as a TOML value" (kindOf .)) }}
{{- end }}
{{- end }}

{{/* A TOML key: bare when it can be, quoted otherwise. */}}
{{- define "outbox-relay.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "outbox-relay.tomlIsTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}{{ if kindIs "map" (first .) }}true{{ end }}{{ end }}
{{- end }}

{{- define "outbox-relay.tomlTable" -}}
{{- $map := .map }}{{ $path := .path }}
{{- range $k, $v := $map }}
{{- if not (or (kindIs "map" $v) (include "outbox-relay.tomlIsTableArray" $v)) }}
{{ include "outbox-relay.tomlKey" $k }} = {{ include "outbox-relay.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $map }}
{{- $key := include "outbox-relay.tomlKey" $k }}
{{- $sub := ternary $key (printf "%s.%s" $path $key) (eq $path "") }}
{{- if kindIs "map" $v }}

[{{ $sub }}]
{{- include "outbox-relay.tomlTable" (dict "map" $v "path" $sub) }}
{{- else if include "outbox-relay.tomlIsTableArray" $v }}
{{- range $v }}

[[{{ $sub }}]]
{{- include "outbox-relay.tomlTable" (dict "map" . "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
