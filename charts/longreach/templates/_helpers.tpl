{{/* Names and labels, as `helm create` writes them. */}}

{{- define "longreach.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "longreach.fullname" -}}
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

{{- define "longreach.selectorLabels" -}}
app.kubernetes.io/name: {{ include "longreach.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "longreach.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "longreach.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: longreach
{{- end }}

{{- define "longreach.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "longreach.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's RBAC, defined once. The rules for the namespaced objects it reads and writes
are generated from the kinds' registry by `longreach crds` into files/rbac/ (a test fails
when they drift); rendered into a ClusterRole (cluster-wide mode) or into a Role per watched
namespace. No Secrets: the operator hands job pods a Secret's *name*.
*/}}
{{- define "longreach.rules.namespaced" -}}
{{ .Files.Get "files/rbac/namespaced-rules.yaml" }}
{{- end }}

{{/* kopf's resource discovery watches CRDs, in both modes. */}}
{{- define "longreach.rules.crds" -}}
# kopf's resource discovery.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end }}

{{/* kopf scans namespaces only when it watches the whole cluster. */}}
{{- define "longreach.rules.namespaces" -}}
# kopf's namespace scanning (cluster-wide mode only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end }}

{{- define "longreach.subjects" -}}
- kind: ServiceAccount
  name: {{ include "longreach.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
