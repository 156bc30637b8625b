{{/* Names, labels, images, env and probes shared by every Eureka template. */}}

{{- define "eureka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eureka.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>; call with (dict "root" $ "component" "reward"). */}}
{{- define "eureka.componentName" -}}
{{- printf "%s-%s" (include "eureka.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "eureka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eureka.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "eureka.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: eureka
{{ include "eureka.selectorLabels" . }}
{{- end -}}

{{/* Pods of the pipeline (every Eureka pod but Redis) carry this label; the NetworkPolicies admit it. */}}
{{- define "eureka.pipelineLabel" -}}
eureka.dev/pipeline: {{ .Release.Name | quote }}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "gpu" true/false). */}}
{{- define "eureka.image" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image .gpu -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "eureka.pullPolicy" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image .gpu -}}
{{- $img.pullPolicy -}}
{{- end -}}

{{- define "eureka.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eureka.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "eureka.tokenSecretName" -}}
{{- default (printf "%s-token" (include "eureka.fullname" .)) .Values.security.serviceToken.existingSecret -}}
{{- end -}}

{{- define "eureka.redisSecretName" -}}
{{- default (printf "%s-redis" (include "eureka.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* A value from a Secret that exists already (kept across upgrades), else a new random one, base64. */}}
{{- define "eureka.keepOrGenerate" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* host:port of a component's Service. */}}
{{- define "eureka.addr" -}}
{{- printf "%s:%v" (include "eureka.componentName" (dict "root" .root "component" .component)) .port -}}
{{- end -}}

{{/* Environment every Eureka container gets: bind address, metrics, gRPC limits, token, TLS. */}}
{{- define "eureka.commonEnv" -}}
- name: EUREKA_HOST
  value: "0.0.0.0"
- name: EUREKA_METRICS_PORT
  value: {{ .metricsPort | quote }}
- name: EUREKA_GRPC__DEADLINE_S
  value: {{ .root.Values.grpc.deadlineSeconds | quote }}
- name: EUREKA_GRPC__MAX_MESSAGE_BYTES
  value: {{ .root.Values.grpc.maxMessageBytes | int64 | quote }}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- if .root.Values.security.serviceToken.enabled }}
- name: EUREKA_SECURITY__SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "eureka.tokenSecretName" .root }}
      key: token
{{- end }}
{{- if .root.Values.security.tls.enabled }}
- name: EUREKA_SECURITY__TLS_CERT
  value: /etc/eureka/tls/tls.crt
- name: EUREKA_SECURITY__TLS_KEY
  value: /etc/eureka/tls/tls.key
- name: EUREKA_SECURITY__TLS_CA
  value: /etc/eureka/tls/ca.crt
{{- end }}
{{- end -}}

{{/* EnvVar dicts: (list name value ...) pairs plus the recipe overrides as EUREKA_RECIPE__<KEY> when asked. */}}
{{- define "eureka.envList" -}}
{{- $out := list -}}
{{- range $pair := .pairs -}}
{{- $out = append $out (dict "name" (index $pair 0) "value" (toString (index $pair 1))) -}}
{{- end -}}
{{- if .recipe -}}
{{- range $k, $v := .root.Values.recipe -}}
{{- $out = append $out (dict "name" (printf "EUREKA_RECIPE__%s" (upper $k)) "value" ($v | toJson | trimAll "\"")) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* A Secret-backed EnvVar. */}}
{{- define "eureka.secretEnv" -}}
{{- toJson (dict "name" .name "valueFrom" (dict "secretKeyRef" (dict "name" .secret "key" .key))) -}}
{{- end -}}

{{/* User-supplied extra env (a name: value map). */}}
{{- define "eureka.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* Readiness, liveness and startup probes on grpc.health.v1: kubelet gRPC probes, or an exec probe over TLS. */}}
{{- define "eureka.grpcProbes" -}}
{{- $probe := dict -}}
{{- if .root.Values.security.tls.enabled -}}
{{- $server := include "eureka.componentName" (dict "root" .root "component" .component) -}}
{{- $_ := set $probe "exec" (dict "command" (list "python" "/app/deploy/healthcheck.py" "--addr" (printf "127.0.0.1:%v" .port) "--ca" "/etc/eureka/tls/ca.crt" "--server-name" $server)) -}}
{{- else -}}
{{- $_ := set $probe "grpc" (dict "port" (int .port)) -}}
{{- end -}}
startupProbe:
  {{- toYaml $probe | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: {{ .startupFailures | default 60 }}
readinessProbe:
  {{- toYaml $probe | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
livenessProbe:
  {{- toYaml $probe | nindent 2 }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* Writable scratch (read-only root filesystem), shared memory for torch, TLS material. */}}
{{- define "eureka.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
{{- if .Values.security.tls.enabled }}
- name: tls
  mountPath: /etc/eureka/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "eureka.volumes" -}}
- name: tmp
  emptyDir: {}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: 1Gi
{{- if .Values.security.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.security.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations, used when no Prometheus Operator monitors are made. */}}
{{- define "eureka.monitorsEnabled" -}}
{{- $mode := .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "enabled") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "eureka.podAnnotations" -}}
{{- if not (include "eureka.monitorsEnabled" .root) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Resources, adding the GPU extended resource when asked. Call with (dict "resources" .. "gpu" ..). */}}
{{- define "eureka.resources" -}}
{{- $res := deepCopy .resources -}}
{{- if .gpu.enabled -}}
{{- $limits := default (dict) $res.limits -}}
{{- $_ := set $limits .gpu.resourceName (int .gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The rollout autoscaling backend in use: keda, hpa, builtin or "" (off). */}}
{{- define "eureka.autoscaler" -}}
{{- $as := .Values.rollout.autoscaling -}}
{{- if $as.enabled -}}
{{- if ne $as.mode "auto" -}}
{{- $as.mode -}}
{{- else if .Capabilities.APIVersions.Has "keda.sh/v1alpha1" -}}
keda
{{- else if .Capabilities.APIVersions.Has "external.metrics.k8s.io/v1beta1" -}}
hpa
{{- else -}}
builtin
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod scheduling fields of a component's values. */}}
{{- define "eureka.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
