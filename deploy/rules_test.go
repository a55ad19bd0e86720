package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
	"github.com/tollgate-dev/tollgate/settlement"
)

const rulesFile = "prometheus/tollgate-rules.yaml"

// repoRoot is where a runbook's path starts.
const repoRoot = ".."

// TestPrometheusRules loads the rule file with Prometheus's own rule parser (what `promtool
// check rules` and Prometheus at start run) and checks every rule against what the programs
// register: each metric an expression names, with the labels it matches on, and each alert's
// severity, annotations and runbook heading.
func TestPrometheusRules(t *testing.T) {
	for _, err := range problems(loadRules(t), programs(t), repoRoot) {
		t.Error(err)
	}
}

// TestMetricsOfOneProgram backs the rule file's promise that only the rules on up and
// process_start_time_seconds need a job matcher: no tollgate_* series is exposed by both
// programs, so a rule on one cannot match the other's.
func TestMetricsOfOneProgram(t *testing.T) {
	progs := programs(t)
	for name := range progs["tollgate-serve"] {
		if _, both := progs["tollgate-settle"][name]; both && strings.HasPrefix(name, "tollgate_") {
			t.Errorf("%s is exposed by tollgate serve and tollgate settle: its rules need a job matcher", name)
		}
	}
}

// loadRules parses the rule file as Prometheus does, or fails the test.
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("Prometheus refuses %s: %v", rulesFile, errors.Join(errs...))
	}
	if len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	return groups
}

// selectors calls f with every vector selector of expr.
func selectors(expr string, f func(*parser.VectorSelector)) error {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return err
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			f(vs)
		}
		return nil
	})
	return nil
}

// TestPrometheusRulesProblems shows that problems finds each kind of mistake: a rule file
// written here, checked against the same registries and docs as the real one.
func TestPrometheusRulesProblems(t *testing.T) {
	progs := programs(t)
	alert := func(group, expr, rest string) string {
		return "groups:\n  - name: " + group + "\n    rules:\n      - alert: X\n        expr: " + expr + "\n" + rest
	}
	const ok = "        for: 5m\n        labels: {severity: page}\n        annotations: {summary: s, description: d, runbook: docs/settlement.md#unassigned-transfers}\n"
	for _, tc := range []struct {
		name, file, want string // want "": no problem
	}{
		{"good", alert("tollgate-serve", `histogram_quantile(0.9, sum by (le) (rate(tollgate_extproc_phase_seconds_bucket{phase="settle"}[5m]))) > 1 or up{job="x"} == 0`, ok), ""},
		{"good summary", alert("tollgate-settle", `go_gc_duration_seconds{quantile="1"} > 1 or go_gc_duration_seconds_count > 1`, ok), ""},
		{"recorded name", "groups:\n  - name: tollgate-serve\n    rules:\n      - record: job:tollgate_x:rate5m\n        expr: rate(tollgate_extproc_voids_total[5m])\n" +
			"      - alert: X\n        expr: 'job:tollgate_x:rate5m > 1'\n" + ok, ""},
		{"misspelled metric", alert("tollgate-serve", "rate(tollgate_extproc_request_total[5m]) > 0", ok),
			`X: tollgate-serve registers no metric "tollgate_extproc_request_total"`},
		{"the other program's metric", alert("tollgate-serve", "tollgate_settle_lease_held < 1", ok),
			`X: tollgate-serve registers no metric "tollgate_settle_lease_held"`},
		{"a label the metric lacks", alert("tollgate-settle", `tollgate_settle_payouts_total{result="failed"} > 0`, ok),
			`X: tollgate_settle_payouts_total has no label "result" (it has chain, status; and job, instance from the scrape)`},
		{"values the code sets", alert("tollgate-serve", `tollgate_extproc_phase_seconds_bucket{phase!="settle", le=~"1|1.0"} > 1 or `+
			`tollgate_extproc_store_seconds_count{call=~"balance|hold|capture|void"} > 1 or tollgate_webhook_deliveries_total{result="failed"} > 0`, ok), ""},
		{"values the code lists", alert("tollgate-settle", `tollgate_settle_open_payouts{status=~"queued|sending", chain="137"} > 0 or `+
			`tollgate_settle_payouts_total{status!="failed"} > 0`, ok), ""},
		{"a value the code never sets", alert("tollgate-serve", `tollgate_webhook_deliveries_total{result="given_up"} > 0`, ok),
			`X: tollgate_webhook_deliveries_total{result="given_up"}: "given_up" is a value the code never sets (the code sets result to delivered, failed, retried)`},
		{"not a value the code never sets", alert("tollgate-serve", `tollgate_extproc_phase_seconds_count{phase!="setle"} > 1`, ok),
			`X: tollgate_extproc_phase_seconds_count{phase!="setle"}: "setle" is a value the code never sets (the code sets phase to request_body, request_headers, response_body, response_headers, settle)`},
		{"an alternative no value matches", alert("tollgate-settle", `tollgate_settle_payouts_total{status=~"sent|paid"} > 0`, ok),
			`X: tollgate_settle_payouts_total{status=~"sent|paid"}: "paid" matches no value the code sets (the code sets status to failed, sent, settled)`},
		{"a bucket the histogram lacks", alert("tollgate-serve", `tollgate_extproc_store_seconds_bucket{le="0.3"} > 1`, ok),
			`X: tollgate_extproc_store_seconds_bucket{le="0.3"}: "0.3" is a value the code never sets`},
		{"a quantile the summary lacks", alert("tollgate-settle", `go_gc_duration_seconds{quantile="0.99"} > 1`, ok),
			`X: go_gc_duration_seconds{quantile="0.99"}: "0.99" is a value the code never sets`},
		{"a histogram without its suffix", alert("tollgate-serve", "tollgate_extproc_phase_seconds > 1", ok),
			`X: tollgate-serve registers no metric "tollgate_extproc_phase_seconds" (a histogram: name its _bucket, _sum or _count)`},
		{"a counter with a histogram suffix", alert("tollgate-serve", "tollgate_extproc_voids_total_count > 1", ok),
			`X: tollgate-serve registers no metric "tollgate_extproc_voids_total_count"`},
		{"no metric name", alert("tollgate-serve", `'{__name__=~"tollgate_.*"} > 1'`, ok),
			`X: a selector without a metric name`},
		{"unknown group", alert("tollgate", "up == 0", ok), `group "tollgate": no program of that name (tollgate-serve, tollgate-settle)`},
		{"no for", alert("tollgate-serve", "up == 0", strings.Replace(ok, "        for: 5m\n", "", 1)), "X: no for"},
		{"severity critical", alert("tollgate-serve", "up == 0", strings.Replace(ok, "page", "critical", 1)), `X: severity "critical", want page or ticket`},
		{"no summary", alert("tollgate-serve", "up == 0", strings.Replace(ok, "summary: s, ", "", 1)), "X: no summary annotation"},
		{"unknown annotation", alert("tollgate-serve", "up == 0", strings.Replace(ok, "summary:", "owner: s, summary:", 1)), `X: annotation "owner" (want summary, description, runbook)`},
		{"runbook without a heading", alert("tollgate-serve", "up == 0", strings.Replace(ok, "#unassigned-transfers", "#unassigned-deposits", 1)),
			`X: runbook docs/settlement.md#unassigned-deposits: no such heading in docs/settlement.md`},
		{"runbook to no file", alert("tollgate-serve", "up == 0", strings.Replace(ok, "docs/settlement.md", "docs/settle.md", 1)),
			`X: runbook docs/settle.md#unassigned-transfers: open ` + filepath.Join(repoRoot, "docs/settle.md")},
		{"runbook not in docs", alert("tollgate-serve", "up == 0", strings.Replace(ok, "docs/settlement.md", "https://example.com/x", 1)),
			`X: runbook "https://example.com/x#unassigned-transfers" is not docs/FILE.md#HEADING`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups, errs := rulefmt.Parse([]byte(tc.file), false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
			if len(errs) > 0 {
				t.Fatalf("Prometheus refuses the case: %v", errors.Join(errs...))
			}
			got := problems(groups, progs, repoRoot)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("want no problem, got %v", got)
			case tc.want != "" && !slices.ContainsFunc(got, func(err error) bool { return strings.HasPrefix(err.Error(), tc.want) }):
				t.Errorf("want a problem starting %q, got %v", tc.want, got)
			}
		})
	}
}

// program is what one Tollgate program exposes at /metrics: every series name a rule can
// query, with its labels.
type program map[string]series

// series is what a rule can select of one series name: its labels and, where the code makes
// them knowable, their values.
type series struct {
	labels []string
	// values holds, by label, every value the program sets on it, for the labels where that is
	// known: the series the program creates at registration (its Go and process collectors,
	// extproc's phase and store-call histograms, webhook's results) and the values its package
	// lists (settlement.LabelValues). Any other label is checked by name only.
	values map[string][]string
}

// know adds values to what the program sets on label.
func (s *series) know(label string, values ...string) {
	if s.values == nil {
		s.values = map[string][]string{}
	}
	for _, v := range values {
		if !slices.Contains(s.values[label], v) {
			s.values[label] = append(s.values[label], v)
		}
	}
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// programs builds each program's registry as its command does (cmd/tollgate/mainlib
// serve.go and settle.go: Go and process collectors, then the package's metrics), keyed by
// the rule group that may query it, with the label values settlement lists for its metrics
// (they are all labelled by chain, so none is created before a worker starts).
func programs(t *testing.T) map[string]program {
	t.Helper()
	build := func(register func(prometheus.Registerer)) program {
		r := &recorder{reg: prometheus.NewRegistry()}
		register(r)
		p, err := r.program()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	settle := build(func(reg prometheus.Registerer) { mainlib.RegisterSettleMetrics(reg) })
	for name, byLabel := range settlement.LabelValues() {
		s, ok := settle[name]
		if !ok {
			t.Fatalf("settlement.LabelValues lists %s, which tollgate settle does not register", name)
		}
		for label, values := range byLabel {
			if !slices.Contains(s.labels, label) {
				t.Fatalf("settlement.LabelValues lists values of %s's label %q, which it does not have", name, label)
			}
			s.know(label, values...)
		}
		settle[name] = s
	}
	return map[string]program{
		"tollgate-serve":  build(func(reg prometheus.Registerer) { mainlib.RegisterServeMetrics(reg) }),
		"tollgate-settle": settle,
	}
}

// recorder registers collectors on a real registry and keeps their descriptions: a vector no
// series has been created in yet is described but not gathered.
type recorder struct {
	reg   *prometheus.Registry
	descs []*prometheus.Desc
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		r.descs = append(r.descs, d)
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err) // the Registerer contract, as prometheus.Registry's
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// descPattern reads a Desc's name and variable labels: Desc has no accessors, and its String
// is the only way to them.
var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^{}]*)\}\}$`)

// program lists the series names and labels of what was registered, and the label values of
// the series that exist once it is (see series.values). A histogram's series are NAME_bucket
// (with le), NAME_sum and NAME_count; a summary's NAME (with quantile), NAME_sum and
// NAME_count. The type of a family comes from Gather, so a histogram or summary vector with
// no series yet would be taken for a plain one (ours create theirs at start).
func (r *recorder) program() (program, error) {
	families, err := r.reg.Gather()
	if err != nil {
		return nil, err
	}
	kinds := map[string]dto.MetricType{}
	for _, f := range families {
		kinds[f.GetName()] = f.GetType()
	}
	p := program{"up": {}}
	for _, d := range r.descs {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil {
			return nil, fmt.Errorf("cannot read %s", d)
		}
		name, vars := m[1], strings.FieldsFunc(m[2], func(r rune) bool { return r == ',' })
		for i, l := range vars { // a constrained label reads c(name)
			vars[i] = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")
		}
		switch kinds[name] {
		case dto.MetricType_HISTOGRAM:
			p[name+"_bucket"] = series{labels: append(slices.Clone(vars), "le")}
			p[name+"_sum"], p[name+"_count"] = series{labels: vars}, series{labels: vars}
		case dto.MetricType_SUMMARY:
			p[name] = series{labels: append(slices.Clone(vars), "quantile")}
			p[name+"_sum"], p[name+"_count"] = series{labels: vars}, series{labels: vars}
		default:
			p[name] = series{labels: vars}
		}
	}
	for _, f := range families {
		names := []string{f.GetName()}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = []string{f.GetName() + "_bucket", f.GetName() + "_sum", f.GetName() + "_count"}
		case dto.MetricType_SUMMARY:
			names = append(names, f.GetName()+"_sum", f.GetName()+"_count")
		}
		for _, name := range names {
			s := p[name]
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					s.know(l.GetName(), l.GetValue())
				}
				if name == f.GetName()+"_bucket" {
					s.know("le", "+Inf")
					for _, b := range m.GetHistogram().GetBucket() {
						s.know("le", spellings(b.GetUpperBound())...)
					}
				}
				if name == f.GetName() && f.GetType() == dto.MetricType_SUMMARY {
					for _, q := range m.GetSummary().GetQuantile() {
						s.know("quantile", spellings(q.GetQuantile())...)
					}
				}
			}
			p[name] = s
		}
	}
	return p, nil
}

// spellings are how an le or quantile value reads in a stored series: as the program exposes
// it ("1") and as Prometheus 3 normalises it ("1.0").
func spellings(f float64) []string {
	return []string{strconv.FormatFloat(f, 'g', -1, 64), labels.FormatOpenMetricsFloat(f)}
}

// annotations are the ones every alert has, and the only ones.
var annotations = []string{"summary", "description", "runbook"}

// runbookPattern is a runbook: a heading of one of the docs.
var runbookPattern = regexp.MustCompile(`^(docs/[a-z0-9_-]+\.md)#([a-z0-9_-]+)$`)

// problems checks the rules against the programs' metrics and the docs under root: the
// group names a program; each name an expression selects is a series that program exposes
// (or a rule of the file records), matched only on labels it has; each alert has a for, a
// severity of page or ticket, exactly a summary, a description and a runbook naming a
// heading in the docs.
func problems(groups *rulefmt.RuleGroups, progs map[string]program, root string) []error {
	var errs []error
	recorded := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	docs := map[string]map[string]bool{}
	for _, g := range groups.Groups {
		prog, ok := progs[g.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("group %q: no program of that name (%s)", g.Name, strings.Join(slices.Sorted(maps.Keys(progs)), ", ")))
			continue
		}
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			for _, err := range selectorProblems(r.Expr, g.Name, prog, recorded) {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			if r.Alert == "" {
				continue
			}
			for _, err := range alertProblems(r, docs, root) {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	return errs
}

// selectorProblems checks every selector of expr against prog.
func selectorProblems(expr, progName string, prog program, recorded map[string]bool) []error {
	var errs []error
	err := selectors(expr, func(vs *parser.VectorSelector) {
		if vs.Name == "" {
			errs = append(errs, fmt.Errorf("a selector without a metric name: %s", vs))
			return
		}
		if recorded[vs.Name] {
			return
		}
		s, ok := prog[vs.Name]
		if !ok {
			err := fmt.Errorf("%s registers no metric %q", progName, vs.Name)
			if _, hist := prog[vs.Name+"_bucket"]; hist {
				err = fmt.Errorf("%w (a histogram: name its _bucket, _sum or _count)", err)
			}
			errs = append(errs, err)
			return
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel || slices.Contains(targetLabels, m.Name) {
				continue
			}
			if !slices.Contains(s.labels, m.Name) {
				has := "no labels"
				if len(s.labels) > 0 {
					has = strings.Join(s.labels, ", ")
				}
				errs = append(errs, fmt.Errorf("%s has no label %q (it has %s; and %s from the scrape)", vs.Name, m.Name, has, strings.Join(targetLabels, ", ")))
				continue
			}
			if values, known := s.values[m.Name]; known {
				if err := valueProblem(m, values); err != nil {
					errs = append(errs, fmt.Errorf("%s{%s}: %w", vs.Name, m, err))
				}
			}
		}
	})
	if err != nil {
		return []error{err} // rulefmt reports it too
	}
	return errs
}

// valueProblem reports a matcher that selects a value the code never sets (values): an = or !=
// value not among them, or an alternative of an =~ or !~ (a|b|…; a whole regex if it is more)
// that matches none of them. Matching "" (no such label) is left alone.
func valueProblem(m *labels.Matcher, values []string) error {
	if m.Value == "" {
		return nil
	}
	sets := fmt.Sprintf("(the code sets %s to %s)", m.Name, strings.Join(slices.Sorted(slices.Values(values)), ", "))
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		if !slices.Contains(values, m.Value) {
			return fmt.Errorf("%q is a value the code never sets %s", m.Value, sets)
		}
		return nil
	}
	alternatives := []string{m.Value}
	if !strings.ContainsAny(m.Value, `()[]\`) {
		alternatives = strings.Split(m.Value, "|")
	}
	for _, a := range alternatives {
		re, err := regexp.Compile("^(?:" + a + ")$") // Prometheus anchors label regexes
		if err != nil {
			return err // the parser accepted it: cannot happen
		}
		if !slices.ContainsFunc(values, re.MatchString) {
			return fmt.Errorf("%q matches no value the code sets %s", a, sets)
		}
	}
	return nil
}

// alertProblems checks an alert's for, severity and annotations; docs caches the headings
// of each doc read.
func alertProblems(r rulefmt.Rule, docs map[string]map[string]bool, root string) []error {
	var errs []error
	if r.For <= 0 {
		errs = append(errs, errors.New("no for: one bad evaluation would fire it"))
	}
	if s := r.Labels["severity"]; s != "page" && s != "ticket" {
		errs = append(errs, fmt.Errorf("severity %q, want page or ticket", s))
	}
	for _, a := range annotations {
		if strings.TrimSpace(r.Annotations[a]) == "" {
			errs = append(errs, fmt.Errorf("no %s annotation", a))
		}
	}
	for _, a := range slices.Sorted(maps.Keys(r.Annotations)) {
		if !slices.Contains(annotations, a) {
			errs = append(errs, fmt.Errorf("annotation %q (want %s)", a, strings.Join(annotations, ", ")))
		}
	}
	runbook := r.Annotations["runbook"]
	if runbook == "" {
		return errs
	}
	m := runbookPattern.FindStringSubmatch(runbook)
	if m == nil {
		return append(errs, fmt.Errorf("runbook %q is not docs/FILE.md#HEADING", runbook))
	}
	file, anchor := m[1], m[2]
	if docs[file] == nil {
		h, err := headings(filepath.Join(root, file))
		if err != nil {
			return append(errs, fmt.Errorf("runbook %s: %w", runbook, err))
		}
		docs[file] = h
	}
	if !docs[file][anchor] {
		errs = append(errs, fmt.Errorf("runbook %s: no such heading in %s", runbook, file))
	}
	return errs
}

// headings returns the anchors GitHub gives the headings of a Markdown file.
func headings(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return anchors(f)
}

// anchors reads Markdown and returns its headings' anchors as GitHub makes them: lower case,
// punctuation but - and _ dropped, spaces to -, a repeated one suffixed -1, -2, …; a line
// starting with # inside a fenced code block is not a heading.
func anchors(r io.Reader) (map[string]bool, error) {
	seen := map[string]int{}
	out := map[string]bool{}
	fenced := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if fenced || !strings.HasPrefix(line, "#") || !ok || len(line)-len(strings.TrimLeft(line, "#")) > 6 {
			continue
		}
		var b strings.Builder
		for _, c := range strings.ToLower(strings.TrimSpace(text)) {
			switch {
			case c == ' ':
				b.WriteRune('-')
			case c == '-' || c == '_' || unicode.IsLetter(c) || unicode.IsDigit(c):
				b.WriteRune(c)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			seen[a]++
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		out[a] = true
	}
	return out, sc.Err()
}

func TestAnchors(t *testing.T) {
	md := "# `tollgate serve`: the ext_proc server\n## Metrics (admin port, private registry)\n```sh\n# not a heading\n```\n" +
		"### Top-ups or payouts stuck\n## Tests\n## Tests\n#not-a-heading\n"
	got, err := anchors(strings.NewReader(md))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"metrics-admin-port-private-registry", "tests", "tests-1", "tollgate-serve-the-ext_proc-server", "top-ups-or-payouts-stuck"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("anchors %v, want %v", keys, want)
	}
}

// TestPrometheusConfig loads the compose stack's prometheus.yml with Prometheus's own config
// loader and checks that it evaluates the rule file and scrapes every job the rules name.
func TestPrometheusConfig(t *testing.T) {
	cfg, err := config.LoadFile("prometheus/prometheus.yml", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Prometheus refuses prometheus/prometheus.yml: %v", err)
	}
	// The loader resolves rule_files against the configuration's directory.
	if !slices.Contains(cfg.RuleFiles, filepath.Clean(rulesFile)) {
		t.Errorf("rule_files %v do not include %s", cfg.RuleFiles, rulesFile)
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	named := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			err := selectors(r.Expr, func(vs *parser.VectorSelector) {
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" {
						named++
						if !jobs[m.Value] {
							t.Errorf("%s names job %q, which prometheus.yml does not scrape (jobs %v)", r.Alert, m.Value, slices.Sorted(maps.Keys(jobs)))
						}
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if named == 0 {
		t.Fatal("no rule names a job: the check above passed on nothing")
	}
}

// TestComposePrometheusVersion keeps the compose stack's Prometheus at the release whose rule
// parser and config loader these tests run: Prometheus's Go module v0.3MM.P is release v3.MM.P.
func TestComposePrometheusVersion(t *testing.T) {
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	mod := regexp.MustCompile(`(?m)^\s*github\.com/prometheus/prometheus v0\.3(\d\d)\.(\d+)\b`).FindSubmatch(gomod)
	if mod == nil {
		t.Fatal("go.mod requires no github.com/prometheus/prometheus v0.3MM.P")
	}
	want := fmt.Sprintf("prom/prometheus:v3.%s.%s", strings.TrimPrefix(string(mod[1]), "0"), mod[2])
	got := "no prom/prometheus image"
	if m := regexp.MustCompile(`(?m)^\s+image: (prom/prometheus:\S+)$`).FindSubmatch(compose); m != nil {
		got = string(m[1])
	}
	if got != want {
		t.Errorf("docker-compose.yml runs %s; the rules are checked with %s, so want %s", got, bytes.TrimSpace(mod[0]), want)
	}
}
