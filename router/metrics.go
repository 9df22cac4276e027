package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// outcome is how the router finished a request.
type outcome uint8

const (
	outcomeOK          outcome = iota // forwarded (whatever the node answered) or answered by the router
	outcomeBadRequest                 // refused at the edge: bad room name, bad upgrade, bad request
	outcomeForbidden                  // WebSocket from an origin not allowed
	outcomeUnavailable                // 503: no node, Redis down, room still moving, shutting down
	outcomeBadGateway                 // 502 or 504: the node failed, timed out or kept refusing
	outcomeLimited                    // 429: the client address created rooms too fast
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "bad_request", "forbidden", "unavailable", "bad_gateway", "limited"}

// retryReason says why a request went to a node again.
type retryReason uint8

const (
	retryMisdirected retryReason = iota // 421: the node does not own the room
	retryMoving                         // 503 Moving: the room is being handed over
	retryDraining                       // 503 Draining: the node takes no placements
	retryUnreachable                    // the node refused the connection
	numRetryReasons
)

var retryNames = [numRetryReasons]string{"misdirected", "moving", "draining", "unreachable"}

// carryOutcome is how a relay's room moving ended for its client.
type carryOutcome uint8

const (
	carryCarried carryOutcome = iota // the client went on at the room's next owner, no close seen
	carryClosed                      // the client was closed with 1012 and reconnects
	numCarryOutcomes
)

var carryNames = [numCarryOutcomes]string{"carried", "closed"}

// metrics are the router's Prometheus metrics, in a registry of their own.
// Label combinations are created up front so the request path only adds.
type metrics struct {
	reg *prometheus.Registry

	httpConns  prometheus.Gauge
	wsConns    prometheus.Gauge
	requests   [numRoutes][numOutcomes]prometheus.Counter
	cacheHits  prometheus.Counter
	redisReads prometheus.Counter
	retries    [numRetryReasons]prometheus.Counter
	steals     prometheus.Counter
	refused    *prometheus.CounterVec
	tooBig     prometheus.Counter
	placement  prometheus.Histogram
	hold       prometheus.Histogram
	carries    [numCarryOutcomes]prometheus.Counter
	carryPause prometheus.Histogram
	carryLost  prometheus.Counter
	nodes      prometheus.Gauge
	cached     prometheus.GaugeFunc
	looped     prometheus.Gauge
}

func newMetrics(cachedRooms func() float64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "roomlb_router_connections",
		Help: "Open client connections, by kind: http (including idle keep-alive) or ws (relayed WebSockets).",
	}, []string{"kind"})
	m.httpConns = conns.WithLabelValues("http")
	m.wsConns = conns.WithLabelValues("ws")

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomlb_router_requests_total",
		Help: "Client requests (WebSocket upgrades included) by route and outcome.",
	}, []string{"route", "outcome"})
	for r := range numRoutes {
		for o := range numOutcomes {
			m.requests[r][o] = requests.WithLabelValues(routeNames[r], outcomeNames[o])
		}
	}

	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomlb_router_lookups_total",
		Help: "Owner lookups of a room, by source: cache or redis (a miss).",
	}, []string{"source"})
	m.cacheHits = lookups.WithLabelValues("cache")
	m.redisReads = lookups.WithLabelValues("redis")

	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomlb_router_retries_total",
		Help: "Requests sent to a node again, by reason: misdirected (421), moving, draining, unreachable.",
	}, []string{"reason"})
	for r := range numRetryReasons {
		m.retries[r] = retries.WithLabelValues(retryNames[r])
	}

	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomlb_router_refused_connections_total",
		Help: "Client connections answered 503 and closed at accept, by the bound they were over: max_conns or max_conns_per_addr.",
	}, []string{"reason"})
	m.tooBig = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "roomlb_router_messages_too_big_total",
		Help: "Client WebSocket messages over --max-frame: each ended its client with 1009 before reaching a sidecar.",
	})
	m.steals = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "roomlb_router_steals_total",
		Help: "Rooms this router took from a dead owner for a live node.",
	})
	m.placement = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "roomlb_router_placement_seconds",
		Help:    "Time to choose a node for a room or a request, waiting for one included.",
		Buckets: []float64{.0001, .001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.hold = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "roomlb_router_hold_seconds",
		Help:    "Time requests were held while their room moved or no node was available.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	carries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomlb_router_carries_total",
		Help: "Relayed WebSockets whose room moved, by outcome: carried (to the room's next owner, the client saw no close) or closed (1012: the client reconnects).",
	}, []string{"outcome"})
	for o := range numCarryOutcomes {
		m.carries[o] = carries.WithLabelValues(carryNames[o])
	}
	m.carryPause = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "roomlb_router_carry_seconds",
		Help:    "Time from the old owner letting a carried client go to its next owner's connection being open.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.carryLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "roomlb_router_carry_lost_messages_total",
		Help: "Messages of carried clients that their old owner did not pass on and the router no longer had a copy of (older than 2 s, larger than 4 KiB, or fragmented).",
	})
	m.nodes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "roomlb_router_nodes",
		Help: "Live nodes in the router's last reading of the registry.",
	})
	m.cached = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomlb_router_cached_rooms",
		Help: "Rooms in the router's owner cache.",
	}, cachedRooms)
	m.looped = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "roomlb_router_looped_websockets",
		Help: "Relayed WebSockets a relay loop passes bytes on for (the others, for the rest of their turn, run on goroutines of their own).",
	})

	m.reg.MustRegister(conns, requests, lookups, retries, m.steals, m.tooBig, m.refused, m.placement, m.hold, carries, m.carryPause, m.carryLost, m.nodes, m.cached, m.looped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
