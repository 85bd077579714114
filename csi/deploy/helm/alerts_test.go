package helm

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// dashboard is the part of Grafana's dashboard model the chart's
// dashboard uses; decoding it strictly catches a misspelt field.
type dashboard struct {
	Title         string   `json:"title"`
	UID           string   `json:"uid"`
	Editable      bool     `json:"editable"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Tags          []string `json:"tags"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Refresh    string `json:"refresh"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Label      string          `json:"label"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
			Definition string          `json:"definition"`
			IncludeAll bool            `json:"includeAll"`
			Multi      bool            `json:"multi"`
			AllValue   string          `json:"allValue"`
			Refresh    int             `json:"refresh"`
			Current    map[string]any  `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int        `json:"id"`
		Type        string     `json:"type"`
		Title       string     `json:"title"`
		Description string     `json:"description"`
		Datasource  datasource `json:"datasource"`
		GridPos     struct {
			X, Y, W, H int
		} `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
			Overrides []any `json:"overrides"`
		} `json:"fieldConfig"`
		Targets []struct {
			RefID        string     `json:"refId"`
			Expr         string     `json:"expr"`
			LegendFormat string     `json:"legendFormat"`
			Datasource   datasource `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func alertsOn() map[string]any {
	v := metricsOn()
	m := v["metrics"].(map[string]any)
	m["prometheusRule"] = map[string]any{"enabled": true, "coldStartSeconds": 42, "labels": map[string]any{"release": "kube-prometheus"}}
	m["dashboard"] = map[string]any{"enabled": true, "namespace": "monitoring"}
	return v
}

// TestAlertsAndDashboard: both are off by default; on, the rule and the
// dashboard decode strictly, carry the operator's settings, and every
// alert and panel has a query. That the queries name metrics modelfs
// exports is checked against a real scrape in tests/e2e.
func TestAlertsAndDashboard(t *testing.T) {
	c := loadChart(t)
	if objs := render(t, c, metricsOn()); len(find[*prometheusRule](objs)) != 0 || len(find[*corev1.ConfigMap](objs)) != 0 {
		t.Fatal("alerts or dashboard rendered without being asked for")
	}
	objs := render(t, c, alertsOn())
	rules := find[*prometheusRule](objs)
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(rules))
	}
	pr := rules[0]
	if pr.Metadata.Namespace != "modelfs" || pr.Metadata.Labels["release"] != "kube-prometheus" {
		t.Errorf("PrometheusRule metadata %+v", pr.Metadata)
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if strings.TrimSpace(r.Expr) == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: empty expression or summary", r.Alert)
			}
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q", r.Alert, sev)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			// Alertmanager expands these; Helm must have left them.
			if strings.Contains(r.Annotations["summary"], "$labels") && !strings.Contains(r.Annotations["summary"], "{{ $labels.") {
				t.Errorf("alert %s: summary %q lost its template", r.Alert, r.Annotations["summary"])
			}
			if r.Alert == "ModelfsSlowColdStart" && !strings.Contains(r.Expr, "> 42") {
				t.Errorf("coldStartSeconds did not reach the alert: %s", r.Expr)
			}
		}
	}
	for _, want := range []string{"ModelfsCSIPluginDown", "ModelfsVolumeMountDown", "ModelfsFetchErrors", "ModelfsCacheFull", "ModelfsSlowColdStart", "ModelfsVerifyFailures"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s among %q", want, alerts)
		}
	}

	cms := find[*corev1.ConfigMap](objs)
	if len(cms) != 1 {
		t.Fatalf("%d ConfigMaps, want the dashboard's", len(cms))
	}
	cm := cms[0]
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
		t.Errorf("dashboard ConfigMap %s/%s labels %v", cm.Namespace, cm.Name, cm.Labels)
	}
	if len(cm.Data) != 1 {
		t.Fatalf("dashboard ConfigMap holds %d files", len(cm.Data))
	}
	for name, text := range cm.Data {
		var d dashboard
		dec := json.NewDecoder(bytes.NewReader([]byte(text)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.UID == "" || len(d.Panels) < 8 {
			t.Errorf("%s: uid %q, %d panels", name, d.UID, len(d.Panels))
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("panel id %d twice", p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if !strings.Contains(q.Expr, "modelfs_") && !strings.Contains(q.Expr, "process_") {
					t.Errorf("panel %q queries %q, no modelfs series", p.Title, q.Expr)
				}
				if q.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: datasource %+v, want the dashboard's variable", p.Title, q.Datasource)
				}
			}
		}
	}
}
