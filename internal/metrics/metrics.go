// Package metrics exposes the control plane's operational figures in the
// Prometheus format: what the audit log committed (every component's
// actions, by action and decision), how its group commits behave, how fast
// the policy decision point decides, and gauges read on each scrape.
//
// Counting committed audit events, rather than instrumenting each service,
// gives one lossless source for every action Bulkhead takes (tokens, SVIDs,
// gateway decisions, elevations), whatever component took it. Labels are
// bounded: actions and decisions are fixed vocabularies, never agent names.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// Metrics is a registry with Bulkhead's collectors. It implements the audit
// log's and the PDP's observers.
type Metrics struct {
	reg             *prometheus.Registry
	events          *prometheus.CounterVec
	commits         *prometheus.CounterVec
	commitSeconds   prometheus.Histogram
	batchEvents     prometheus.Histogram
	decisions       *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	witnessAlerts   *prometheus.CounterVec
	witnessSize     prometheus.Gauge

	mu      sync.Mutex
	actions map[string]bool // action labels in use
}

// maxActions bounds the action label's values. Actions are mostly fixed
// names, but a few carry what a caller sent (an HTTP route's method), and a
// caller must not be able to grow the registry without bound: past the
// bound, new actions count as "other".
const maxActions = 256

// actionLabel is action, or "other" once maxActions are in use.
func (m *Metrics) actionLabel(action string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.actions[action] {
		return action
	}
	if len(m.actions) >= maxActions {
		return "other"
	}
	m.actions[action] = true
	return action
}

// New returns a registry with the Go runtime's and the process's collectors
// and Bulkhead's own.
func New() *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		actions: map[string]bool{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bulkhead_audit_events_total",
			Help: "Events committed to the audit log, by action and decision (allow, deny, or empty)."}, []string{"action", "decision"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bulkhead_audit_commits_total",
			Help: "Audit log group commits, by result (ok, or failed: the actions they describe were refused)."}, []string{"result"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bulkhead_audit_commit_seconds",
			Help:    "Duration of one audit group commit (transaction, Merkle hashes, fsync).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14)}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bulkhead_audit_commit_events",
			Help:    "Events per audit group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bulkhead_pdp_decisions_total",
			Help: "Policy decisions, by result (allow or deny; errors deny)."}, []string{"decision"}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bulkhead_pdp_decision_seconds",
			Help:    "Duration of one policy decision, live set, shadow set and manifests included.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2, 14)}),
		witnessAlerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bulkhead_audit_witness_alerts_total",
			Help: "Checkpoints of the audit log that did not extend the one this process's witness holds, by kind (truncated, forked, inconsistent, bad_signature)."}, []string{"kind"}),
		witnessSize: prometheus.NewGauge(prometheus.GaugeOpts{Name: "bulkhead_audit_witness_size",
			Help: "Entries in the newest audit log checkpoint this process's witness verified (0: none yet)."}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events, m.commits, m.commitSeconds, m.batchEvents, m.decisions, m.decisionSeconds, m.witnessAlerts, m.witnessSize)
	return m
}

// Committed implements audit.CommitObserver.
func (m *Metrics) Committed(events []audit.Event, took time.Duration, err error) {
	m.commitSeconds.Observe(took.Seconds())
	m.batchEvents.Observe(float64(len(events)))
	if err != nil {
		m.commits.WithLabelValues("failed").Inc()
		return
	}
	m.commits.WithLabelValues("ok").Inc()
	for _, ev := range events {
		m.events.WithLabelValues(m.actionLabel(ev.Action), string(ev.Decision)).Inc()
	}
}

// Decided implements policy.DecisionObserver.
func (m *Metrics) Decided(allowed bool, took time.Duration) {
	d := "deny"
	if allowed {
		d = "allow"
	}
	m.decisions.WithLabelValues(d).Inc()
	m.decisionSeconds.Observe(took.Seconds())
}

var _ audit.WitnessObserver = (*Metrics)(nil)

// Witnessed implements audit.WitnessObserver.
func (m *Metrics) Witnessed(size int64) { m.witnessSize.Set(float64(size)) }

// WitnessAlerted implements audit.WitnessObserver. Kinds are the audit
// package's fixed vocabulary.
func (m *Metrics) WitnessAlerted(kind string) { m.witnessAlerts.WithLabelValues(kind).Inc() }

// GaugeFunc registers a gauge read on each scrape. read gets a context
// bounded by the scrape; if it fails, the gauge is left out of that scrape
// rather than reported with a made-up value.
func (m *Metrics) GaugeFunc(name, help string, read func(context.Context) (float64, error)) {
	m.reg.MustRegister(&funcGauge{desc: prometheus.NewDesc(name, help, nil, nil), read: read})
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: 10 * time.Second})
}

// readTimeout bounds a gauge's read (a store query).
const readTimeout = 2 * time.Second

type funcGauge struct {
	desc *prometheus.Desc
	read func(context.Context) (float64, error)
}

func (g *funcGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *funcGauge) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	v, err := g.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(g.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
}
