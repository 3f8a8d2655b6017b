{{/* The chart's name. */}}
{{- define "sm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object's name: <release>-<chart>, or the release name
when it already holds the chart's name. */}}
{{- define "sm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: server-manager
{{- end -}}

{{/* Selector labels of one component: include "sm.selector" (list . "operator") */}}
{{- define "sm.selector" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "sm.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "sm.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sm.runnerTokenSecret" -}}
{{- default (printf "%s-runner-token" (include "sm.fullname" .)) .Values.runner.existingTokenSecret -}}
{{- end -}}

{{/* The registry the operator pushes to and hosts pull from. */}}
{{- define "sm.registryAddress" -}}
{{- if .Values.registry.address -}}
{{- .Values.registry.address -}}
{{- else if .Values.registry.enabled -}}
{{- printf "%s-registry.%s.svc:%d" (include "sm.fullname" .) .Release.Namespace (int .Values.registry.service.port) -}}
{{- else -}}
{{- fail "registry.address is required when registry.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* Pod Security "restricted": the pod part. */}}
{{- define "sm.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod Security "restricted": the container part. */}}
{{- define "sm.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
