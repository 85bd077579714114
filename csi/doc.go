// Package csi is the modelfs Container Storage Interface plugin: pods name
// a model as a volume (a static PersistentVolume, a StorageClass, or an
// inline ephemeral volume) and find its files, read-only, at their mount
// path.
//
// Each published volume is its own `modelfs mount` process, started in a
// session of its own: the plugin can crash or restart without taking the
// volumes in use down with it. The plugin keeps a small record per volume
// (volume id, target, pid; never secrets) in its state dir, and on start it
// adopts the mounts that still answer and detaches the stale ones. All
// volumes on a node share one disk block cache, so a model any pod on the
// node read before starts warm.
//
// Secrets from nodePublishSecretRef reach the mount process only through
// its environment, never its arguments or any log: the gRPC interceptor
// logs method, volume id and target, not requests. A volume with a
// roleArn reads as its pod: the pod's service account token, which
// kubelet passes on every (re)publish, goes to a 0600 file of the
// volume's own that the mount's SDK exchanges at STS; such a volume never
// gets the node's identity.
//
// The plugin's one call to the Kubernetes API removes the startup taint
// (StartupTaintKey) from its own Node once kubelet has registered it.
//
// The Controller service exists for dynamic provisioning from
// StorageClass parameters. It keeps no state: a volume is a view of remote
// objects, its id is derived from its name and its attributes travel in
// the PersistentVolume. Remote objects are never created or deleted.
package csi
