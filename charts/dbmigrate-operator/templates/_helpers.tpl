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
# Only what the operator calls (tests/e2e/test_chart_rbac.py derives it from the code).
# The DatabaseMigrations: kopf lists, watches and patches them (annotations, finalizers); the
# runner reads one and patches its status subresource.
- apiGroups: ["dbmigrate.io"]
  resources: ["databasemigrations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["dbmigrate.io"]
  resources: ["databasemigrations/status"]
  verbs: ["patch"]
# Events about each migration's progress (core v1, also kopf's).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The DSN Secret and SQL ConfigMaps a migration names (read only, by name).
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
# The report a migration leaves when it ends (`<name>-report`, owned by the migration): created,
# or replaced when it is there already (the post-deployment watch completes it).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "update"]
# The target Deployment: rollout gates, and the undo on rollback (a patch of its template,
# planned from its ReplicaSets).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# Backfill and tool Jobs, and their pods' termination messages.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}

{{/* kopf peering objects: keep-alives of the replicas. */}}
{{- define "dbmigrate.peeringVerbs" -}}
["get", "list", "watch", "patch", "create"]
{{- end }}
