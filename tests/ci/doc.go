// Package ci tests the CI entry point's set-up: .ci/install-deps installs
// exactly the missing tools, with a package index update only when needed.
package ci
