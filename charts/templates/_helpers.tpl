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

{{/* Image reference: repository:tag, or repository@digest when a digest is set; call with (dict "root" $ "gpu" true/false). */}}
{{- define "eureka.image" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image .gpu -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
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

{{/* A value from a Secret that exists already (kept across upgrades), else a new random one, base64.
     Memoised per render, so the Secret and the pods' checksum annotation see the same value. */}}
{{- define "eureka.keepOrGenerate" -}}
{{- $memo := .root.Values.__eurekaGenerated | default dict -}}
{{- $id := printf "%s/%s" .name .key -}}
{{- if not (hasKey $memo $id) -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{- $_ := set $memo $id (index $existing.data .key) -}}
{{- else -}}
{{- $_ := set $memo $id (randAlphaNum 48 | b64enc) -}}
{{- end -}}
{{- $_ := set .root.Values "__eurekaGenerated" $memo -}}
{{- end -}}
{{- index $memo $id -}}
{{- end -}}

{{/* sha256 of every secret the pods read: generated ones by value, existing ones by their data when helm
     can look them up (install/upgrade), else by name. A changed secret rolls the pods. */}}
{{- define "eureka.secretsChecksum" -}}
{{- $parts := list -}}
{{- $refs := list (list (include "eureka.redisSecretName" .) "password" .Values.redis.auth.existingSecret) -}}
{{- if .Values.security.serviceToken.enabled -}}
{{- $refs = append $refs (list (include "eureka.tokenSecretName" .) "token" .Values.security.serviceToken.existingSecret) -}}
{{- end -}}
{{- range $refs -}}
{{- if index . 2 -}}
{{- $found := lookup "v1" "Secret" $.Release.Namespace (index . 0) -}}
{{- $parts = append $parts (printf "%s=%s" (index . 0) (toJson ($found.data | default dict))) -}}
{{- else -}}
{{- $parts = append $parts (printf "%s=%s" (index . 0) (include "eureka.keepOrGenerate" (dict "root" $ "name" (index . 0) "key" (index . 1)))) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $parts | sha256sum -}}
{{- end -}}

{{/* Bytes of a Kubernetes memory quantity (2Gi, 512Mi, 1G, 1048576). */}}
{{- define "eureka.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $out := "" -}}
{{- range $suffix, $mult := $units -}}
{{- if and (not $out) (hasSuffix $suffix $q) -}}
{{- $out = mulf (float64 (trimSuffix $suffix $q)) $mult | int64 | toString -}}
{{- end -}}
{{- end -}}
{{- default (float64 $q | int64 | toString) $out -}}
{{- end -}}

{{/* <service>.<namespace>.svc.<clusterDomain>: for clients outside the release's namespace (KEDA). */}}
{{- define "eureka.fqdn" -}}
{{- printf "%s.%s.svc.%s" (include "eureka.componentName" (dict "root" .root "component" .component)) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* host:port of a component's Service. */}}
{{- define "eureka.addr" -}}
{{- printf "%s:%v" (include "eureka.componentName" (dict "root" .root "component" .component)) .port -}}
{{- end -}}

{{/* The broadcast weight path's settings, the same for learner and rollout (name/value pairs): the store at the
learner Service's broadcast port, nccl when both sides have GPUs, else gloo. */}}
{{- define "eureka.broadcastPairs" -}}
{{- $b := .root.Values.broadcast -}}
{{- $nccl := and .root.Values.learner.gpu.enabled .root.Values.rollout.gpu.enabled -}}
{{- toJson (list (list "EUREKA_BROADCAST__ENABLED" (ternary "true" "false" $b.enabled))
    (list "EUREKA_BROADCAST__ADDRESS" (include "eureka.addr" (dict "root" .root "component" "learner" "port" $b.port)))
    (list "EUREKA_BROADCAST__BACKEND" (ternary "nccl" "gloo" $nccl)) (list "EUREKA_BROADCAST__BUCKET_BYTES" (toString (int $b.bucketBytes)))) -}}
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

{{/* User-supplied extra env: NAME: value, or NAME: {valueFrom: {...}} (a Secret key, a field). */}}
{{- define "eureka.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
{{- if kindIs "map" $v }}
  valueFrom:
    {{- toYaml $v.valueFrom | nindent 4 }}
{{- else }}
  value: {{ $v | toString | quote }}
{{- end }}
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

{{/* The gRPC health probes of a pod template shared by every learner node: node 0 (NODE_RANK 0, global rank 0)
     is checked, the other nodes pass (they serve nothing; torchrun exits when a rank dies). */}}
{{- define "eureka.leaderOnlyProbes" -}}
{{- $check := printf "python /app/deploy/healthcheck.py --addr 127.0.0.1:%v" .port -}}
{{- if .root.Values.security.tls.enabled -}}
{{- $check = printf "%s --ca /etc/eureka/tls/ca.crt --server-name %s" $check (include "eureka.componentName" (dict "root" .root "component" .component)) -}}
{{- end -}}
{{- $probe := dict "exec" (dict "command" (list "sh" "-c" (printf "test \"$NODE_RANK\" != 0 || exec %s" $check))) -}}
startupProbe:
  {{- toYaml $probe | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 180
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

{{/* Writable scratch (read-only root filesystem), shared memory for torch, TLS material. Call with the root. */}}
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

{{/* Call with (dict "root" $ "shmSize" "1Gi"). */}}
{{- define "eureka.volumes" -}}
- name: tmp
  emptyDir: {}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shmSize | default "256Mi" }}
{{- if .root.Values.security.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .root.Values.security.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Whether learner and rollout get the model from a volume the chart mounts at model.path. */}}
{{- define "eureka.modelMounted" -}}
{{- if and .Values.model.path (or .Values.model.existingClaim .Values.model.download.enabled) -}}true{{- end -}}
{{- end -}}

{{/* The model volume (existing claim, read-only, or the download's emptyDir). */}}
{{- define "eureka.modelVolume" -}}
- name: model
{{- if .Values.model.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.model.download.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "eureka.modelMount" -}}
- name: model
  mountPath: {{ .Values.model.path }}
  {{- if .Values.model.existingClaim }}
  readOnly: true
  {{- with .Values.model.subPath }}
  subPath: {{ . }}
  {{- end }}
  {{- end }}
{{- end -}}

{{/* The init container that fills the model volume: hf:// in the Eureka image, s3:// with the AWS CLI.
     Skipped when the folder already holds a complete download (a restarted container keeps its emptyDir). */}}
{{- define "eureka.modelDownload" -}}
{{- $d := .root.Values.model.download -}}
{{- $hf := hasPrefix "hf://" $d.source -}}
- name: fetch-model
  {{- if $hf }}
  image: {{ include "eureka.image" . | quote }}
  imagePullPolicy: {{ include "eureka.pullPolicy" . }}
  command: ["python", "/app/deploy/fetch_model.py"]
  args: [{{ $d.source | quote }}, {{ .root.Values.model.path | quote }}, "--revision", {{ $d.revision | quote }}]
  env:
    - name: HOME
      value: /tmp
    {{- with $d.secretName }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $d.tokenKey }}
    {{- end }}
  {{- else }}
  image: {{ printf "%s:%s" $d.s3Image.repository $d.s3Image.tag | quote }}
  imagePullPolicy: {{ $d.s3Image.pullPolicy }}
  command: ["sh", "-c"]
  args:
    - test -f "$DEST/.complete" || { aws s3 sync --only-show-errors "$SOURCE" "$DEST" && touch "$DEST/.complete"; }
  env:
    - name: SOURCE
      value: {{ $d.source | quote }}
    - name: DEST
      value: {{ .root.Values.model.path | quote }}
    - name: HOME
      value: /tmp
    {{- with $d.s3EndpointUrl }}
    - name: AWS_ENDPOINT_URL
      value: {{ . | quote }}
    {{- end }}
  {{- with $d.secretName }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  {{- end }}
  resources:
    {{- toYaml $d.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ .root.Values.model.path }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* Prometheus scrape annotations, used when no Prometheus Operator monitors are made. */}}
{{- define "eureka.monitorsEnabled" -}}
{{- $mode := .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "enabled") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* Labels of the monitors and rules: `release` (kube-prometheus-stack's default selector) and monitoring.labels. */}}
{{- define "eureka.monitoringLabels" -}}
{{- with .Values.monitoring.release }}
release: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Scrape annotations (kept with monitors too: the fallback for annotation-based scrape configs),
     the secrets checksum (a changed secret rolls the pod) and the user's podAnnotations. */}}
{{- define "eureka.podAnnotations" -}}
{{- if .metricsPort }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
checksum/secrets: {{ include "eureka.secretsChecksum" .root }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Resources (gpu.resources when GPUs are on), adding the GPU extended resource. Call with (dict "resources" .. "gpu" ..). */}}
{{- define "eureka.resources" -}}
{{- $res := deepCopy (ternary (.gpu.resources | default .resources) .resources (.gpu.enabled | default false)) -}}
{{- if .gpu.enabled -}}
{{- $limits := default (dict) $res.limits -}}
{{- $_ := set $limits .gpu.resourceName (int .gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The rollout autoscaling backend in use: keda, hpa, builtin or "" (off). `auto` takes KEDA when its CRDs
     are served, else the built-in autoscaler: an external metrics API alone (KEDA's own, or an adapter for other
     metrics) does not say that eureka_buffer_prompt_backlog is served, so an HPA is used only when asked for. */}}
{{- define "eureka.autoscaler" -}}
{{- $as := .Values.rollout.autoscaling -}}
{{- if $as.enabled -}}
{{- if ne $as.mode "auto" -}}
{{- $as.mode -}}
{{- else if .Capabilities.APIVersions.Has "keda.sh/v1alpha1" -}}
keda
{{- else -}}
builtin
{{- end -}}
{{- end -}}
{{- end -}}

{{/* autoscaling/v2 behavior from rollout.autoscaling.behavior: scale-down waits out the stabilization window and
     removes a few pods a period (each one drains), scale-up is quick. */}}
{{- define "eureka.hpaBehavior" -}}
scaleDown:
  stabilizationWindowSeconds: {{ .scaleDownStabilizationSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ .scaleDownPods }}
      periodSeconds: {{ .periodSeconds }}
scaleUp:
  stabilizationWindowSeconds: 0
  policies:
    - type: Pods
      value: {{ .scaleUpPods }}
      periodSeconds: {{ .periodSeconds }}
{{- end -}}

{{/* Pod scheduling fields of a component's values; call with (dict "root" $ "component" "reward" "cfg" $values). */}}
{{- define "eureka.scheduling" -}}
{{- with .cfg.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .cfg.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .cfg.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" (include "eureka.selectorLabels" $ | fromYaml)))) | nindent 4 }}
  {{- end }}
{{- end }}
{{- with .cfg -}}
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
{{- end }}
{{- end -}}
