package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the sidecar's Prometheus metrics, on its own registry.
type metrics struct {
	reg *prometheus.Registry

	rooms            prometheus.Gauge
	clients          prometheus.Gauge
	link             prometheus.Gauge
	claims           *prometheus.CounterVec
	heartbeatSeconds prometheus.Histogram
	leasesLost       *prometheus.CounterVec
	reclaims         prometheus.Counter
	dropped          prometheus.Counter
	handoffs         *prometheus.CounterVec
	moveWaits        *prometheus.CounterVec
	messages         *prometheus.CounterVec
	refusals         *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomlb_sidecar_rooms", Help: "Rooms this node owns.",
		}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomlb_sidecar_clients", Help: "Client WebSockets connected to this node.",
		}),
		link: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomlb_sidecar_monolith_link_up", Help: "1 while the monolith link is up and initialised.",
		}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_claims_total", Help: "Room claims by result: won, owned (another node has it), error.",
		}, []string{"result"}),
		heartbeatSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomlb_sidecar_heartbeat_seconds", Help: "Time of one heartbeat (a Redis round trip): every room of the node is served for 0.9 x the heartbeat TTL from a heartbeat's start.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		leasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_leases_lost_total", Help: "Rooms this node stopped serving because its lease was lost (another node holds the room after Redis lost the registry), because it was not re-claimed in time after such a loss (expired), or because the node's heartbeat could not be refreshed in time (heartbeat).",
		}, []string{"reason"}),
		reclaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomlb_sidecar_reclaims_total", Help: "Rooms this node kept by re-claiming them after Redis lost the registry.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomlb_sidecar_client_messages_expired_total", Help: "Client messages dropped on the monolith link because their room's lease ran out (or the room started moving) while they waited to be written.",
		}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_handoffs_total", Help: "Rooms handed over by a drain (out) and taken from other nodes' drains (in).",
		}, []string{"direction"}),
		moveWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_move_waits_total", Help: "Rooms moved away (drain, move), by how the wait for the monolith's write of the room's last change ended: none (nothing was pending), written (the write was seen land), unseen (waited out its deadline), cancelled (the drain ran out of time).",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_messages_total", Help: "Messages on the monolith link (in: from the monolith, out: to it) and to clients (delivered).",
		}, []string{"direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomlb_sidecar_refusals_total", Help: "Requests refused at the ingress, by reason.",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.rooms, m.clients, m.link, m.claims, m.heartbeatSeconds, m.leasesLost, m.reclaims, m.dropped, m.handoffs, m.moveWaits, m.messages, m.refusals,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
