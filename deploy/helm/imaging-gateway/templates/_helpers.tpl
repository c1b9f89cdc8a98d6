{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "imaging-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "imaging-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart label value: name-version. */}}
{{- define "imaging-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "imaging-gateway.labels" -}}
helm.sh/chart: {{ include "imaging-gateway.chart" . }}
{{ include "imaging-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imaging-gateway
{{- end }}

{{/* Labels that select the gateway pods (never change them: selectors are immutable). */}}
{{- define "imaging-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imaging-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "imaging-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imaging-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference. */}}
{{- define "imaging-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* Name of the claim mounted at /data. */}}
{{- define "imaging-gateway.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "imaging-gateway.fullname" .)) }}
{{- end }}

{{/* Where the signing key is copied to (mode 0600, owned by the gateway's user). */}}
{{- define "imaging-gateway.signingKeyPath" -}}
/run/imaging-gateway/keys/signing-key.jwk
{{- end }}

{{/* Where the Elasticsearch CA certificate is mounted. */}}
{{- define "imaging-gateway.esCaPath" -}}
/etc/imaging-gateway/elasticsearch-ca/ca.crt
{{- end }}

{{/*
Refuse configurations that cannot work. Included by the Deployment, so that
`helm install`, `helm template` and `helm lint` all report them.
*/}}
{{- define "imaging-gateway.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if not (has .Values.index (list "elasticsearch" "sqlite")) }}
{{- fail (printf "index must be \"elasticsearch\" or \"sqlite\", not %q" (toString .Values.index)) }}
{{- end }}
{{- if lt $replicas 1 }}
{{- fail "replicaCount must be at least 1" }}
{{- end }}
{{- if and (eq .Values.index "sqlite") (gt $replicas 1) }}
{{- fail "with the SQLite index (index: sqlite) the gateway is one process owning its data directory: set replicaCount to 1, or use index: elasticsearch for several replicas" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.signingKey.existingSecret) }}
{{- fail "replicas must share ONE token signing key: create a Secret with a private JWK and set signingKey.existingSecret (see NOTES.txt / deploy/README.md)" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.persistence.enabled) }}
{{- fail "replicas share the blob store: persistence.enabled must be true (a ReadWriteMany claim) when replicaCount > 1" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.persistence.existingClaim) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail "replicas share the blob store: persistence.accessModes must include ReadWriteMany when replicaCount > 1" }}
{{- end }}
{{- if and (eq .Values.index "elasticsearch") (empty .Values.elasticsearch.hosts) }}
{{- fail "elasticsearch.hosts must list at least one URL" }}
{{- end }}
{{- if and .Values.elasticsearch.apiKey.existingSecret .Values.elasticsearch.basicAuth.existingSecret }}
{{- fail "set either elasticsearch.apiKey.existingSecret or elasticsearch.basicAuth (not both)" }}
{{- end }}
{{- if and .Values.elasticsearch.basicAuth.existingSecret (not .Values.elasticsearch.basicAuth.username) }}
{{- fail "elasticsearch.basicAuth.existingSecret needs elasticsearch.basicAuth.username" }}
{{- end }}
{{- if not (has .Values.storage (list "filesystem" "s3")) }}
{{- fail (printf "storage must be \"filesystem\" or \"s3\", not %q" (toString .Values.storage)) }}
{{- end }}
{{- if and (eq .Values.storage "s3") (not .Values.s3.bucket) }}
{{- fail "storage: s3 needs s3.bucket (an existing bucket)" }}
{{- end }}
{{- if not .Values.gateway.publicBaseUrl }}
{{- fail "gateway.publicBaseUrl is required: the external https:// URL of the gateway (RetrieveURL, BulkDataURI and the token issuer shared by every replica)" }}
{{- end }}
{{- end }}
