{{/* The objects' name: fullnameOverride, or <release>-<chart> (the release alone when it is the chart's name), at most 63 characters. */}}
{{- define "proxy-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if eq .Release.Name .Chart.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: the entries of a one-line YAML flow mapping (wrap them in braces). */}}
{{- define "proxy-operator.selectorLabels" -}}
"app.kubernetes.io/name": {{ .Chart.Name | quote }}, "app.kubernetes.io/instance": {{ .Release.Name | quote }}
{{- end -}}

{{/* Common labels: the entries of a one-line YAML flow mapping (wrap them in braces). */}}
{{- define "proxy-operator.labels" -}}
"app.kubernetes.io/name": {{ .Chart.Name | quote }}, "app.kubernetes.io/instance": {{ .Release.Name | quote }}, "app.kubernetes.io/version": {{ .Chart.AppVersion | quote }}, "app.kubernetes.io/managed-by": {{ .Release.Service | quote }}, "helm.sh/chart": {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "proxy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.create -}}
{{- template "proxy-operator.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}
