{{/* The release's name prefix of every object. */}}
{{- define "trading.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; "component" is the service (principal) name. */}}
{{- define "trading.labels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Selector of one service's pods (also what NetworkPolicies match callers by). */}}
{{- define "trading.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The headless Service of one service: every ready pod's address in DNS. */}}
{{- define "trading.headless" -}}
{{ include "trading.fullname" .root }}-{{ .name }}-headless
{{- end -}}

{{/* TRADING_SERVICE_ADDRESSES: every service by its headless Service's DNS
name, dialled as a gRPC "dns:///" target so each client balances
round_robin over all ready replicas. */}}
{{- define "trading.serviceAddresses" -}}
{{- $root := . -}}
{{- $addresses := dict -}}
{{- range $name, $svc := .Values.services -}}
{{- $_ := set $addresses $name (printf "dns:///%s.%s.svc.%s:%d" (include "trading.headless" (dict "root" $root "name" $name)) $root.Release.Namespace $root.Values.clusterDomain (int $svc.port)) -}}
{{- end -}}
{{- toJson $addresses -}}
{{- end -}}

{{- define "trading.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
