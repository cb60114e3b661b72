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
The operator's RBAC, defined once. Rules for the namespaced objects it reads and writes;
rendered into a ClusterRole (cluster-wide mode) or into a Role per watched namespace.
Keep in step with operator/kube.py and the kopf handlers, and with manifests/base/rbac.yaml
(a test compares them). No Secrets: the operator hands job pods a Secret's *name*.
*/}}
{{- define "longreach.rules.namespaced" -}}
# The three kinds: kopf patches its annotations, the handlers read them, and
# ttlSecondsAfterFinished deletes a finished resource.
- apiGroups: [longreach.io]
  resources: [datamixtures, contextextensions, needleevals]
  verbs: [get, list, watch, patch, update, delete]
# Phase, conditions, progress and results.
- apiGroups: [longreach.io]
  resources: [datamixtures/status, contextextensions/status, needleevals/status]
  verbs: [get, patch, update]
# Children: job config ConfigMaps and Services; garbage collection does the rest.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
# NeedleEval runs as a batch Job.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# DataMixture runs as a KubeRay RayJob.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [get, list, watch, create, patch, delete]
# ContextExtension runs as a JobSet (gang restarts).
- apiGroups: [jobset.x-k8s.io]
  resources: [jobsets]
  verbs: [get, list, watch, create, patch, delete]
# kopf posts an event on every transition (core v1 and events.k8s.io).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
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
