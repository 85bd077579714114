// Package cgroups reads which memory cgroup a process is in: the one place
// that parses /proc/self/cgroup, for the mount's memory limit and for the
// CSI plugin's per-volume cgroups.
package cgroups
