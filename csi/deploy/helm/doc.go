// Package helm tests the modelfs-csi Helm chart with Helm's own loader,
// linter and template engine, in a module of its own so that the modelfs
// module does not depend on Helm.
package helm
