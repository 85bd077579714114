// Package cgroups reads which memory cgroup a process is in: the one place
// that parses /proc/self/cgroup, for the mount's memory limit and for the
// CSI plugin's per-volume cgroups; and how much more memory the process
// may use (Headroom), for gpuwarm's pins and the mount's page-cache fill.
package cgroups
