package mountinfo

import "testing"

func TestIsMounted(t *testing.T) {
	if ok, err := IsMounted("/proc"); err != nil || !ok {
		t.Errorf("IsMounted(/proc) = %v, %v; want true", ok, err)
	}
	if ok, err := IsMounted(t.TempDir()); err != nil || ok {
		t.Errorf("IsMounted(a fresh temporary directory) = %v, %v; want false", ok, err)
	}
	if err := Unmount(t.TempDir()); err == nil {
		t.Error("Unmount of a directory that is not a mount point succeeded")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:         "/mnt/plain",
		`/mnt/with\040space`: "/mnt/with space",
		`/mnt/tab\011nl\012`: "/mnt/tab\tnl\n",
		`/mnt/back\134slash`: `/mnt/back\slash`,
		`/mnt/short\04`:      `/mnt/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
