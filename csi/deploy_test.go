package csi

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/fetch"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's type the deploy dir uses.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name   string `json:"name"`
		NewTag string `json:"newTag"`
	} `json:"images"`
}

// TestDeployManifests decodes every manifest under deploy/ strictly with
// the Kubernetes API types, so a misspelt field fails here and not on a
// cluster, and checks what the driver relies on.
func TestDeployManifests(t *testing.T) {
	files, err := filepath.Glob("deploy/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	examples, _ := filepath.Glob("deploy/examples/*.yaml")
	files = append(files, examples...)
	if len(files) < 8 {
		t.Fatalf("found only %d manifests: %v", len(files), files)
	}
	kinds := map[string]int{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil || head.Kind == "" {
				t.Fatalf("%s doc %d: no kind (%v)", file, i, err)
			}
			kinds[head.Kind]++
			obj := newObject(t, file, head.APIVersion, head.Kind)
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s doc %d (%s): %v", file, i, head.Kind, err)
			}
			checkObject(t, file, obj)
		}
	}
	for _, k := range []string{"CSIDriver", "DaemonSet", "Deployment", "ServiceAccount", "ClusterRole", "PersistentVolume", "PersistentVolumeClaim", "Pod", "StorageClass"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

func newObject(t *testing.T, file, apiVersion, kind string) any {
	types := map[string]any{
		"v1/Namespace": &corev1.Namespace{}, "v1/ServiceAccount": &corev1.ServiceAccount{},
		"v1/Secret": &corev1.Secret{}, "v1/PersistentVolume": &corev1.PersistentVolume{},
		"v1/PersistentVolumeClaim": &corev1.PersistentVolumeClaim{}, "v1/Pod": &corev1.Pod{},
		"apps/v1/DaemonSet": &appsv1.DaemonSet{}, "apps/v1/Deployment": &appsv1.Deployment{},
		"storage.k8s.io/v1/CSIDriver": &storagev1.CSIDriver{}, "storage.k8s.io/v1/StorageClass": &storagev1.StorageClass{},
		"rbac.authorization.k8s.io/v1/ClusterRole":        &rbacv1.ClusterRole{},
		"rbac.authorization.k8s.io/v1/ClusterRoleBinding": &rbacv1.ClusterRoleBinding{},
		"rbac.authorization.k8s.io/v1/Role":               &rbacv1.Role{},
		"rbac.authorization.k8s.io/v1/RoleBinding":        &rbacv1.RoleBinding{},
		"kustomize.config.k8s.io/v1beta1/Kustomization":   &kustomization{},
	}
	obj, ok := types[apiVersion+"/"+kind]
	if !ok {
		t.Fatalf("%s: no type for %s %s", file, apiVersion, kind)
	}
	return obj
}

func checkObject(t *testing.T, file string, obj any) {
	t.Helper()
	switch o := obj.(type) {
	case *storagev1.CSIDriver:
		if o.Name != DriverName || o.Spec.AttachRequired == nil || *o.Spec.AttachRequired ||
			o.Spec.PodInfoOnMount == nil || !*o.Spec.PodInfoOnMount ||
			!slices.Contains(o.Spec.VolumeLifecycleModes, storagev1.VolumeLifecyclePersistent) ||
			!slices.Contains(o.Spec.VolumeLifecycleModes, storagev1.VolumeLifecycleEphemeral) {
			t.Errorf("%s: CSIDriver %+v", file, o.Spec)
		}
	case *appsv1.DaemonSet:
		checkPodSpec(t, file, o.Name, &o.Spec.Template.Spec)
		plugin := o.Spec.Template.Spec.Containers[0]
		if plugin.SecurityContext == nil || plugin.SecurityContext.Privileged == nil || !*plugin.SecurityContext.Privileged {
			t.Errorf("%s: the plugin container must be privileged", file)
		}
		bidirectional := false
		for _, m := range plugin.VolumeMounts {
			if m.MountPath == "/var/lib/kubelet" && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				bidirectional = true
			}
		}
		if !bidirectional {
			t.Errorf("%s: the kubelet dir needs Bidirectional propagation", file)
		}
		checkPluginArgs(t, file, plugin.Args)
		var names []string
		for _, c := range o.Spec.Template.Spec.Containers {
			names = append(names, c.Name)
		}
		if !slices.Contains(names, "node-driver-registrar") || !slices.Contains(names, "liveness-probe") {
			t.Errorf("%s: sidecars missing: %v", file, names)
		}
	case *appsv1.Deployment:
		checkPodSpec(t, file, o.Name, &o.Spec.Template.Spec)
		for _, c := range o.Spec.Template.Spec.Containers {
			if len(c.Args) > 0 && c.Args[0] == "csi" {
				checkPluginArgs(t, file, c.Args)
			}
		}
	case *corev1.PersistentVolume:
		if o.Spec.CSI == nil || o.Spec.CSI.Driver != DriverName {
			t.Errorf("%s: PV %s is not a %s volume", file, o.Name, DriverName)
		} else if _, err := parseVolume(o.Spec.CSI.VolumeAttributes); err != nil {
			t.Errorf("%s: PV %s: %v", file, o.Name, err)
		}
	case *corev1.Pod:
		for _, v := range o.Spec.Volumes {
			if v.CSI != nil {
				if _, err := parseVolume(v.CSI.VolumeAttributes); err != nil {
					t.Errorf("%s: inline volume %s: %v", file, v.Name, err)
				}
			}
		}
	case *storagev1.StorageClass:
		if _, err := parseVolume(o.Parameters); err != nil {
			t.Errorf("%s: StorageClass %s: %v", file, o.Name, err)
		}
	case *rbacv1.ClusterRole:
		checkClusterRole(t, file, o)
	case *kustomization:
		if len(o.Images) != 1 || o.Images[0].Name != "ghcr.io/modelfs/modelfs" || o.Images[0].NewTag == "" || o.Images[0].NewTag == "latest" {
			t.Errorf("%s: want the modelfs image pinned to a release tag: %+v", file, o.Images)
		}
		for _, r := range o.Resources {
			if _, err := os.Stat(filepath.Join(filepath.Dir(file), r)); err != nil {
				t.Errorf("%s: resource %s: %v", file, r, err)
			}
		}
	}
}

// checkPodSpec: what every pod of the driver needs in production. Pods
// that are not the driver's (the examples) are left alone.
func checkPodSpec(t *testing.T, file, name string, spec *corev1.PodSpec) {
	t.Helper()
	if !strings.HasPrefix(name, "modelfs-csi") {
		return
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("%s: want nodeSelector kubernetes.io/os: linux", file)
	}
	for _, c := range spec.Containers {
		if c.ImagePullPolicy == "" {
			t.Errorf("%s: container %s has no imagePullPolicy", file, c.Name)
		}
		if strings.HasSuffix(c.Image, ":latest") {
			t.Errorf("%s: container %s runs a :latest image", file, c.Name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s: container %s requests no cpu or memory", file, c.Name)
		}
		if c.SecurityContext == nil {
			t.Errorf("%s: container %s has no securityContext", file, c.Name)
		}
		if c.Name == "node-driver-registrar" && (c.LivenessProbe == nil || !slices.ContainsFunc(c.Args, func(a string) bool {
			return strings.HasPrefix(a, "--http-endpoint=")
		})) {
			t.Errorf("%s: the registrar needs --http-endpoint and a liveness probe on it, so a lost registration restarts it", file)
		}
	}
}

// checkPluginArgs: flags the manifests pass must be ones `modelfs csi`
// takes.
func checkPluginArgs(t *testing.T, file string, args []string) {
	t.Helper()
	known := []string{"--endpoint", "--node-id", "--state-dir", "--cache-dir", "--profile-dir", "--node-identity", "--inline-sources", "--deny-networks", "--allow-networks", "--cache-size", "--max-mem-cache", "--mount-memory-headroom", "--mount-timeout", "--supervise", "--metrics-addr", "--remove-startup-taint", "--token-audience"}
	for _, a := range args[1:] {
		name, val, _ := strings.Cut(a, "=")
		if !slices.Contains(known, name) {
			t.Errorf("%s: unknown plugin flag %s", file, a)
		}
		var err error
		switch name {
		case "--inline-sources":
			_, err = ParseInlineSources(val)
		case "--deny-networks", "--allow-networks":
			_, err = fetch.ParseNetworks(val)
		}
		if err != nil {
			t.Errorf("%s: %s: %v", file, name, err)
		}
	}
}

// checkClusterRole: the node plugin's role may get and patch nodes (its
// startup taint) and nothing else; no other role touches nodes.
func checkClusterRole(t *testing.T, file string, cr *rbacv1.ClusterRole) {
	t.Helper()
	if cr.Name == "modelfs-csi-node" {
		if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].APIGroups, []string{""}) || !slices.Equal(cr.Rules[0].Resources, []string{"nodes"}) ||
			!slices.Equal(cr.Rules[0].Verbs, []string{"get", "patch"}) {
			t.Errorf("%s: ClusterRole %s grants %+v; want get and patch on nodes only", file, cr.Name, cr.Rules)
		}
		return
	}
	for _, r := range cr.Rules {
		for _, res := range r.Resources {
			if slices.Contains([]string{"nodes", "csinodes", "volumeattachments", "secrets", "*"}, res) {
				t.Errorf("%s: ClusterRole %s grants %s, which nothing uses", file, cr.Name, res)
			}
		}
	}
}
