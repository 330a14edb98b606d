{{- define "recdistill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "recdistill.fullname" -}}
{{- printf "%s-%s" .Release.Name (include "recdistill.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "recdistill.labels" -}}
app.kubernetes.io/name: {{ include "recdistill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "recdistill.selector" -}}
app.kubernetes.io/name: {{ include "recdistill.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "recdistill.redisUrl" -}}
{{- if .Values.valkey.enabled -}}
redis://{{ include "recdistill.fullname" . }}-valkey:6379/0
{{- else -}}
{{- required "valkey.redisUrl is required when valkey.enabled is false" .Values.valkey.redisUrl -}}
{{- end -}}
{{- end -}}

{{- define "recdistill.secretName" -}}
{{- default (printf "%s-admin" (include "recdistill.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "recdistill.sharedClaim" -}}
{{- default (printf "%s-shared" (include "recdistill.fullname" .)) .Values.shared.existingClaim -}}
{{- end -}}

{{- define "recdistill.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
