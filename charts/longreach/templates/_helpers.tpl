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

{{/*
Images. Every image follows global.registry and global.tag unless it names its own; images/
build.sh pushes them under these names. The default registry is the project's, where only the
release workflow pushes, for released versions.
*/}}
{{- define "longreach.defaultRegistry" -}}ghcr.io/longreach{{- end }}

{{/* The tag of an image that names none: global.tag, else the chart's appVersion. */}}
{{- define "longreach.tag" -}}
{{- .Values.global.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "longreach.operatorImage" -}}
{{- $repository := .Values.image.repository | default (printf "%s/operator" .Values.global.registry) }}
{{- printf "%s:%s" $repository (.Values.image.tag | default (include "longreach.tag" .)) }}
{{- end }}

{{/* A job's image: jobImages.<name>, else <global.registry>/<name>:<tag>. Call with (list $ name). */}}
{{- define "longreach.jobImage" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- index $root.Values.jobImages $name | default (printf "%s/%s:%s" $root.Values.global.registry $name (include "longreach.tag" $root)) }}
{{- end }}

{{/*
The images that are the chart's defaults at its own appVersion, one per line: nothing set a
registry or tag for them, so they exist only if this version was released (NOTES.txt warns).
*/}}
{{- define "longreach.unreleasedImages" -}}
{{- $default := include "longreach.defaultRegistry" . }}
{{- $images := dict "operator" (include "longreach.operatorImage" .) }}
{{- $ownTags := dict "operator" .Values.image.tag }}
{{- range $name := list "data" "trainer" "eval" }}
{{- $_ := set $images $name (include "longreach.jobImage" (list $ $name)) }}
{{- $_ := set $ownTags $name (index $.Values.jobImages $name) }}
{{- end }}
{{- range $name := list "operator" "data" "trainer" "eval" }}
{{- $image := index $images $name }}
{{- if and (eq $image (printf "%s/%s:%s" $default $name $.Chart.AppVersion)) (not $.Values.global.tag) (not (index $ownTags $name)) }}
{{ $image }}
{{- end }}
{{- end }}
{{- end }}
