package promtest

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestSeries(t *testing.T) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(`# TYPE reqs counter
reqs{op="get",source="s3"} 3
reqs{op="head",source="s3"} 5
reqs{op="get",source="http"} 7
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(Series(mf, "reqs", map[string]string{"op": "get"})); n != 2 {
		t.Fatalf("op=get: %d series, want 2", n)
	}
	if n := len(Series(mf, "reqs", nil)); n != 3 {
		t.Fatalf("all: %d series, want 3", n)
	}
	got := Series(mf, "reqs", map[string]string{"op": "get", "source": "http"})
	if len(got) != 1 || got[0].GetCounter().GetValue() != 7 {
		t.Fatalf("op=get,source=http: %v", got)
	}
	if n := len(Series(mf, "missing", nil)); n != 0 {
		t.Fatalf("missing family: %d series", n)
	}
}
