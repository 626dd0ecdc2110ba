{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "dbmigrate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "dbmigrate.fullname" -}}
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

{{- define "dbmigrate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dbmigrate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbmigrate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dbmigrate.labels" -}}
helm.sh/chart: {{ include "dbmigrate.chart" . }}
{{ include "dbmigrate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: dbmigrate
{{- end }}

{{- define "dbmigrate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dbmigrate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference; backfill Jobs run the same one (DBMIGRATE_IMAGE). */}}
{{- define "dbmigrate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when kopf peering is on: asked for, or more than one replica. */}}
{{- define "dbmigrate.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
The namespaced rules: everything the operator does inside a watched namespace. Enumerated
verbs only; no wildcards. Used by the ClusterRole (all namespaces) or each Role.
*/}}
{{- define "dbmigrate.namespacedRules" -}}
# The DatabaseMigrations themselves (kopf patches annotations and finalizers; status via the
# subresource).
- apiGroups: ["dbmigrate.io"]
  resources: ["databasemigrations"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["dbmigrate.io"]
  resources: ["databasemigrations/status"]
  verbs: ["get", "patch", "update"]
# Events about each migration's progress, both APIs.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The DSN Secret and SQL ConfigMaps a migration names (read only, by name).
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
# The target Deployment: rollout gates, and the undo on rollback (a patch of its template).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# Backfill and tool Jobs, and their pods' termination messages.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- end }}

{{/* kopf peering objects: keep-alives of the replicas. */}}
{{- define "dbmigrate.peeringVerbs" -}}
["get", "list", "watch", "patch", "create"]
{{- end }}
