// Package hubserver is an in-process Hugging Face Hub for tests: the repo
// info API (GET /api/{models,datasets}/{repo}/revision/{rev}, siblings with
// ?blobs=true), /resolve with the Hub's headers (X-Repo-Commit,
// X-Linked-Etag, X-Linked-Size) and error codes (X-Error-Code: RepoNotFound,
// RevisionNotFound, EntryNotFound, GatedRepo), and a second server standing
// in for the CDN that LFS files redirect to with signed, expiring links.
package hubserver
