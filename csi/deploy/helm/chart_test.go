package helm

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"
)

const chartDir = "modelfs-csi"

// serviceMonitor is the part of the Prometheus Operator's type the chart
// writes; decoding it strictly catches a misspelt field.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metaOnly          `json:"metadata"`
	Spec       serviceMonitorSpc `json:"spec"`
}

type metaOnly struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

type serviceMonitorSpc struct {
	Selector          struct{ MatchLabels map[string]string } `json:"selector"`
	NamespaceSelector struct {
		MatchNames []string `json:"matchNames"`
	} `json:"namespaceSelector"`
	Endpoints []struct {
		Port        string `json:"port"`
		Path        string `json:"path"`
		Interval    string `json:"interval"`
		Relabelings []struct {
			SourceLabels []string `json:"sourceLabels"`
			TargetLabel  string   `json:"targetLabel"`
		} `json:"relabelings"`
	} `json:"endpoints"`
}

// prometheusRule is the part of the Prometheus Operator's type the chart
// writes.
type prometheusRule struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   metaOnly `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// kustomization is the part of kustomize's type the base uses.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name   string `json:"name"`
		NewTag string `json:"newTag"`
	} `json:"images"`
}

func newObject(t *testing.T, apiVersion, kind string) any {
	t.Helper()
	types := map[string]func() any{
		"v1/Namespace":      func() any { return &corev1.Namespace{} },
		"v1/ServiceAccount": func() any { return &corev1.ServiceAccount{} },
		"v1/Service":        func() any { return &corev1.Service{} },
		"apps/v1/DaemonSet": func() any { return &appsv1.DaemonSet{} },
		"apps/v1/Deployment": func() any {
			return &appsv1.Deployment{}
		},
		"storage.k8s.io/v1/CSIDriver":                     func() any { return &storagev1.CSIDriver{} },
		"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
		"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
		"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
		"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
		"monitoring.coreos.com/v1/ServiceMonitor":         func() any { return &serviceMonitor{} },
		"monitoring.coreos.com/v1/PrometheusRule":         func() any { return &prometheusRule{} },
		"v1/ConfigMap": func() any { return &corev1.ConfigMap{} },
	}
	mk, ok := types[apiVersion+"/"+kind]
	if !ok {
		t.Fatalf("no type for %s %s", apiVersion, kind)
	}
	return mk()
}

// decode decodes each YAML document strictly into its Kubernetes type.
func decode(t *testing.T, what string, docs []string) []any {
	t.Helper()
	var objs []any
	for _, doc := range docs {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, doc)
		}
		if head.Kind == "" {
			continue // only comments
		}
		obj := newObject(t, head.APIVersion, head.Kind)
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %s: %v\n%s", what, head.Kind, err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// render is helm template with values over the chart's defaults.
func render(t *testing.T, c *chart.Chart, values map[string]any) []any {
	t.Helper()
	vals, err := chartutil.ToRenderValues(c, values,
		chartutil.ReleaseOptions{Name: "modelfs", Namespace: "modelfs", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(c, vals)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range releaseutil.SplitManifests(out[name]) {
			docs = append(docs, doc)
		}
	}
	return decode(t, "helm template", docs)
}

func TestLint(t *testing.T) {
	for _, values := range []map[string]any{nil, metricsOn(), alertsOn()} {
		res := lint.AllWithKubeVersion(chartDir, values, "modelfs", nil)
		for _, m := range res.Messages {
			// INFO (like "icon is recommended") is advice, not a fault.
			if m.Severity > support.InfoSev {
				t.Errorf("helm lint: %s", m)
			}
		}
	}
}

func metricsOn() map[string]any {
	return map[string]any{"metrics": map[string]any{"enabled": true, "serviceMonitor": map[string]any{"enabled": true}}}
}

func find[T any](objs []any) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// kustomizeBase reads the kustomize base the chart must match.
func kustomizeBase(t *testing.T) ([]any, *kustomization) {
	t.Helper()
	b, err := os.ReadFile("../kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatal(err)
	}
	var objs []any
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join("..", r))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decode(t, r, strings.Split(string(data), "\n---\n"))...)
	}
	return objs, &k
}

// TestDefaults: the chart's defaults render the kustomize base, object by
// object, but for the labels and the namespace object (helm install
// --create-namespace), so that either install gives the same driver.
func TestDefaults(t *testing.T) {
	c := loadChart(t)
	objs := render(t, c, nil)
	checkProduction(t, "chart", objs)
	base, k := kustomizeBase(t)
	checkProduction(t, "kustomize base", base)

	if len(k.Images) != 1 || k.Images[0].NewTag != c.Metadata.AppVersion {
		t.Errorf("kustomization.yaml's image tag %+v is not the chart's appVersion %s", k.Images, c.Metadata.AppVersion)
	}
	if len(find[*corev1.Service](objs)) != 0 {
		t.Error("a metrics Service by default")
	}
	norm := func(objs []any) map[string]string {
		m := map[string]string{}
		for _, o := range objs {
			if _, ok := o.(*corev1.Namespace); ok {
				continue
			}
			b, err := yaml.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			var generic map[string]any
			if err := yaml.Unmarshal(b, &generic); err != nil {
				t.Fatal(err)
			}
			stripLabels(generic)
			stripImageTags(generic)
			out, _ := yaml.Marshal(generic)
			meta := generic["metadata"].(map[string]any)
			m[generic["kind"].(string)+"/"+meta["name"].(string)] = string(out)
		}
		return m
	}
	got, want := norm(objs), norm(base)
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("the chart has no %s", name)
		} else if g != w {
			t.Errorf("%s differs between the chart and the kustomize base:\n%s", name, lineDiff(g, w))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the kustomize base has no %s", name)
		}
	}
}

// stripLabels drops labels and annotations, where Helm's bookkeeping
// lives, everywhere but in selectors.
func stripLabels(v any) {
	switch x := v.(type) {
	case map[string]any:
		if meta, ok := x["metadata"].(map[string]any); ok {
			delete(meta, "labels")
			delete(meta, "annotations")
			delete(meta, "creationTimestamp")
		}
		for _, c := range x {
			stripLabels(c)
		}
	case []any:
		for _, c := range x {
			stripLabels(c)
		}
	}
}

// stripImageTags drops the modelfs image's tag: kustomize adds it from
// images:, the chart from its appVersion (compared above).
func stripImageTags(v any) {
	switch x := v.(type) {
	case map[string]any:
		if img, ok := x["image"].(string); ok && strings.HasPrefix(img, "ghcr.io/modelfs/modelfs") {
			x["image"] = "ghcr.io/modelfs/modelfs"
		}
		for _, c := range x {
			stripImageTags(c)
		}
	case []any:
		for _, c := range x {
			stripImageTags(c)
		}
	}
}

// checkProduction: what every install needs.
func checkProduction(t *testing.T, what string, objs []any) {
	t.Helper()
	var pods []*corev1.PodSpec
	for _, ds := range find[*appsv1.DaemonSet](objs) {
		pods = append(pods, &ds.Spec.Template.Spec)
	}
	for _, d := range find[*appsv1.Deployment](objs) {
		pods = append(pods, &d.Spec.Template.Spec)
	}
	if len(pods) != 2 {
		t.Fatalf("%s: %d workloads, want the node DaemonSet and the controller", what, len(pods))
	}
	for _, spec := range pods {
		if spec.NodeSelector["kubernetes.io/os"] != "linux" {
			t.Errorf("%s: want nodeSelector kubernetes.io/os: linux", what)
		}
		for _, c := range spec.Containers {
			if c.ImagePullPolicy == "" || c.Resources.Requests.Memory().IsZero() || c.SecurityContext == nil {
				t.Errorf("%s: container %s needs a pull policy, requests and a securityContext", what, c.Name)
			}
			if c.Name == "node-driver-registrar" && (c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil) {
				t.Errorf("%s: the registrar has no health probe", what)
			}
		}
	}
	for _, cr := range find[*rbacv1.ClusterRole](objs) {
		if cr.Name == "modelfs-csi-node" {
			// The startup taint's removal: its own Node, nothing else.
			if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].APIGroups, []string{""}) || !slices.Equal(cr.Rules[0].Resources, []string{"nodes"}) ||
				!slices.Equal(cr.Rules[0].Verbs, []string{"get", "patch"}) {
				t.Errorf("%s: ClusterRole %s grants %+v; want get and patch on nodes only", what, cr.Name, cr.Rules)
			}
			continue
		}
		for _, r := range cr.Rules {
			for _, res := range r.Resources {
				if slices.Contains([]string{"nodes", "csinodes", "volumeattachments", "secrets", "*"}, res) {
					t.Errorf("%s: ClusterRole %s grants %s, which nothing uses", what, cr.Name, res)
				}
			}
		}
	}
	for _, b := range find[*rbacv1.ClusterRoleBinding](objs) {
		if b.RoleRef.Name == "modelfs-csi-node" && (len(b.Subjects) != 1 || b.Subjects[0].Name != "modelfs-csi-node") {
			t.Errorf("%s: ClusterRoleBinding %s gives the node plugin's role to %+v", what, b.Name, b.Subjects)
		}
	}
}

// TestValues: the values operators change reach the objects.
func TestValues(t *testing.T) {
	c := loadChart(t)
	vals := metricsOn()
	vals["kubeletDir"] = "/var/lib/k0s/kubelet"
	vals["image"] = map[string]any{"tag": "v9.9.9", "pullPolicy": "Always"}
	vals["logLevel"] = "debug"
	vals["controller"] = map[string]any{"enabled": false}
	vals["node"] = map[string]any{
		"cacheSize": "500Gi", "maxMemCache": "2Gi", "allowNetworks": "10.1.0.0/16", "inlineSources": "none", "removeStartupTaint": false,
		"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": "10%"}},
		"tolerations":    []any{map[string]any{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}},
		"resources":      map[string]any{"requests": map[string]any{"cpu": "1", "memory": "1Gi"}, "limits": map[string]any{"memory": "8Gi"}},
	}
	vals["podIdentity"] = map[string]any{"audience": "minio.example.com"}
	objs := render(t, c, vals)
	if drv := find[*storagev1.CSIDriver](objs)[0]; len(drv.Spec.TokenRequests) != 1 || drv.Spec.TokenRequests[0].Audience != "minio.example.com" ||
		drv.Spec.RequiresRepublish == nil || !*drv.Spec.RequiresRepublish {
		t.Errorf("CSIDriver token requests %+v, requiresRepublish %v", drv.Spec.TokenRequests, drv.Spec.RequiresRepublish)
	}
	if n := len(find[*appsv1.Deployment](objs)); n != 0 {
		t.Errorf("controller disabled, yet %d Deployments", n)
	}
	if n := len(find[*rbacv1.ClusterRole](objs)); n != 0 {
		t.Errorf("controller disabled and no startup taint, yet %d ClusterRoles", n)
	}
	ds := find[*appsv1.DaemonSet](objs)[0]
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "10%" {
		t.Errorf("updateStrategy %+v", ds.Spec.UpdateStrategy)
	}
	spec := ds.Spec.Template.Spec
	plugin := spec.Containers[0]
	if plugin.Image != "ghcr.io/modelfs/modelfs:v9.9.9" || plugin.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("plugin image %s %s", plugin.Image, plugin.ImagePullPolicy)
	}
	for _, a := range []string{"--cache-size=500Gi", "--max-mem-cache=2Gi", "--allow-networks=10.1.0.0/16", "--inline-sources=none", "--metrics-addr=:9809", "--remove-startup-taint=false", "--token-audience=minio.example.com"} {
		if !slices.Contains(plugin.Args, a) {
			t.Errorf("plugin args %q lack %s", plugin.Args, a)
		}
	}
	if !slices.ContainsFunc(plugin.Env, func(e corev1.EnvVar) bool { return e.Name == "MODELFS_LOG_LEVEL" && e.Value == "debug" }) {
		t.Error("log level not passed on")
	}
	if plugin.Resources.Limits.Memory().String() != "8Gi" {
		t.Errorf("plugin resources %+v", plugin.Resources)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "nvidia.com/gpu" {
		t.Errorf("tolerations %+v", spec.Tolerations)
	}
	// Every path under kubelet's directory follows kubeletDir.
	b, _ := yaml.Marshal(ds)
	if strings.Contains(string(b), "/var/lib/kubelet") {
		t.Errorf("a path still names /var/lib/kubelet:\n%s", b)
	}
	if !slices.Contains(spec.Containers[1].Args, "--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/csi.modelfs.io/csi.sock") {
		t.Errorf("registrar args %q", spec.Containers[1].Args)
	}
	svcs := find[*corev1.Service](objs)
	if len(svcs) != 1 || svcs[0].Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Fatalf("metrics Service: %+v", svcs)
	}
	sms := find[*serviceMonitor](objs)
	if len(sms) != 1 || sms[0].Spec.Endpoints[0].Port != "metrics" ||
		sms[0].Spec.Selector.MatchLabels["app.kubernetes.io/name"] != svcs[0].Spec.Selector["app.kubernetes.io/name"] {
		t.Fatalf("ServiceMonitor: %+v", sms)
	}
	if !slices.ContainsFunc(plugin.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 9809 }) {
		t.Errorf("plugin ports %+v", plugin.Ports)
	}
}

// lineDiff lists the lines only the chart (+) or only the base (-) has.
func lineDiff(chart, base string) string {
	cl, bl := strings.Split(chart, "\n"), strings.Split(base, "\n")
	var out []string
	for _, l := range cl {
		if !slices.Contains(bl, l) {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(cl, l) {
			out = append(out, "- "+l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPodIdentityOff: without pod identity the CSIDriver asks kubelet for
// no tokens and the plugin turns roleArn volumes away.
func TestPodIdentityOff(t *testing.T) {
	objs := render(t, loadChart(t), map[string]any{"podIdentity": map[string]any{"enabled": false}})
	drv := find[*storagev1.CSIDriver](objs)[0]
	if len(drv.Spec.TokenRequests) != 0 || drv.Spec.RequiresRepublish != nil {
		t.Errorf("CSIDriver %+v", drv.Spec)
	}
	args := find[*appsv1.DaemonSet](objs)[0].Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--token-audience=") {
		t.Errorf("plugin args %q lack an empty --token-audience", args)
	}
}

// The shared cache's flags, and its own credentials mounted from a
// Secret, appear only when a location is set.
func TestSharedCacheValues(t *testing.T) {
	c := loadChart(t)
	plain := find[*appsv1.DaemonSet](render(t, c, map[string]any{}))[0].Spec.Template.Spec
	for _, a := range plain.Containers[0].Args {
		if strings.HasPrefix(a, "--shared-cache") {
			t.Fatalf("default values give %s", a)
		}
	}
	vals := map[string]any{"node": map[string]any{"sharedCache": map[string]any{
		"location": "s3://cluster-cache/blocks", "endpoint": "https://store.example", "region": "eu-west-1",
		"profile": "shared-cache", "credentialsSecret": "modelfs-shared-cache"}}}
	spec := find[*appsv1.DaemonSet](render(t, c, vals))[0].Spec.Template.Spec
	plugin := spec.Containers[0]
	for _, a := range []string{"--shared-cache=s3://cluster-cache/blocks", "--shared-cache-endpoint=https://store.example",
		"--shared-cache-region=eu-west-1", "--shared-cache-profile=shared-cache",
		"--shared-cache-credentials-file=/etc/modelfs/shared-cache/credentials"} {
		if !slices.Contains(plugin.Args, a) {
			t.Errorf("plugin args %q lack %s", plugin.Args, a)
		}
	}
	// The store's keys are its own: they must not become the plugin's
	// credentials file, which node-identity volumes' origins would read.
	if slices.ContainsFunc(plugin.Env, func(e corev1.EnvVar) bool { return e.Name == "AWS_SHARED_CREDENTIALS_FILE" }) {
		t.Errorf("plugin env %+v names the shared cache's keys as every client's credentials file", plugin.Env)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "modelfs-shared-cache"
	}) || !slices.ContainsFunc(plugin.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == "/etc/modelfs/shared-cache" && m.ReadOnly
	}) {
		t.Errorf("the credentials Secret is not mounted: volumes %+v, mounts %+v", spec.Volumes, plugin.VolumeMounts)
	}
}
