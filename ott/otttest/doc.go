// Package otttest is a fake OpenTogetherTube monolith for fast tests of
// whatever speaks the balancer side of ott/PROTOCOL.md (the sidecar).
// It behaves like the real Node monolith as that document describes it,
// pitfalls included, and like the Node reference in testdata/monolith, and
// it lets tests look inside (message counters, rooms, room state, a hook).
//
// A Monolith listens on two loopback ports: HTTP (HTTPAddr) and the
// balancer WebSocket link (BalancerAddr, any path). It keeps its state in a
// real Redis exactly as the real one does (ott/PROTOCOL.md §7): room:<name>
// (state JSON, debounced SET ... EX), auth:<token> (sessions),
// roommanager:load_epoch (INCR per load), room-sync:<name> (only deleted).
//
// # The database
//
// The real monolith's SQL Rooms table (permanent rooms) is the Redis hash
// refdb:rooms, as in the Node reference: field = lowercased room name, value
// = the room's settings JSON,
//
//	{"name":"MovieNight","title":"","description":"","visibility":"public","queueMode":"manual"}
//
// POST /api/room/create writes permanent rooms there; a test can HSET a room
// there to have a "database" room that no monolith has loaded.
//
// # Faithful
//
//   - Handshake (§2.3): init sent on accept with the HTTP port; everything
//     before the balancer's init dropped; close 1002 "Balancer did not send
//     init message" after InitTimeout; a full gossip to the balancer right
//     after its first init; a later init only replaces the id. Gossip to all
//     every GossipInterval. No pings. A plain GET gets 426.
//   - Validation (§3.1, via ott.DecodeB2M): invalid, unknown or non-JSON
//     messages are logged and dropped.
//   - Room lookup (§4.1): memory (case-insensitive), Redis room:<name>
//     (exact case), refdb:rooms (lowercased), else not found. Every load,
//     whatever caused it (load, join, HTTP), INCRs the epoch and sends loaded
//     to every initialised balancer. No lock: lookups run in goroutines
//     (plus LoadDelay), so two overlapping loads of one unloaded room make two
//     instances; both loaded report the first instance's epoch, gossip lists
//     both, unload removes the first (§8 item 4).
//   - join (§4.3): token check (4004), room lookup (4002), canonical name,
//     the six messages in order; no name or duplicate-id check. leave
//     (§4.4): any link may leave any client; unknown ids only log; the leaver
//     is removed before the broadcasts. A closing link makes its clients
//     leave.
//   - client_msg (§4.5): req 11 chat, 2 playback, 3 skip (nothing at all,
//     not even an event, when no video is playing), 4 seek, 5 add (only
//     queues: the next tick moves the video into an empty player), 6 remove
//     (other requests and malformed ones are logged and ignored);
//     status; kickme (reason echoed unvalidated, any JSON value, default
//     4000); notify usernameChanged; auth ignored; a null payload or a req
//     without request gets kick 4000; an array is an unknown action. No
//     permission checks. A client's messages are handled in order, after its
//     join finished.
//   - Broadcasts: one room_msg per balancer id with a member in the room,
//     sent on the first link with that id (§8 item 6). A room emits a sync
//     of its changed fields 50 ms after the last change (a trailing
//     debounce) and after loading, or at the next tick if that comes first.
//   - State (§7): a sync with a stored field among its changed ones
//     (re)starts the debounce of SET room:<name> EX RoomExpire by
//     StateDebounce (trailing: each such sync pushes it back), so the write
//     lands about StateDebounce+50ms after the last change; a room starts
//     dirty, so its first write comes StateDebounce+50ms after its load.
//   - Tick: every TickInterval (1 s) each loaded room is updated, then
//     synced at once, like the real Room.update: an empty player with a
//     queue takes the next video; a playing video whose position is past its
//     endAt ?? length ?? 0 ends (the next one plays, or the player empties
//     and stops). The move (dequeueNext: currentSource, queue,
//     playbackPosition from startAt ?? 0, _playbackStart, isPlaying false
//     when the queue runs empty, playbackSpeed 1; dj mode restarts the
//     video, loop mode requeues it) has its own sync and restarts the write.
//   - unload (§4.6): kick 1001 per member, then unloaded Commanded to all;
//     room:<name> kept. The instance leaves the monolith at once but its
//     timers do not stop: a sync still due fires (to nobody) and starts the
//     write, and a pending write lands later with the state as of the
//     unload, even over what a newer instance of the room, loaded in
//     between, has written (a real flaw). unload of a room that is not
//     loaded "crashes" the fake: every connection and listener closes at
//     once and it stops working (Crashed reports it).
//   - Keepalive (§4.7): every KeepaliveInterval; the stamp is refreshed (with
//     EXPIRE room:<name>) at most every UnloadAfter/2 while the room has
//     users; a room idle longer than UnloadAfter is unloaded Keepalive (kick
//     4003, refused while users are present), its pending write flushed and
//     room:<name>, room-sync:<name> deleted.
//   - Shutdown (§2.4): every link closed 1001 "Server shutting down" (no
//     kick, no unloaded); after ShutdownDelay it stops without writing any
//     room state, like the real one's exit: pending writes are lost. Until
//     then the rooms live on (tick, keepalive, syncs, writes that fall due).
//
// # Simplified (the spec is silent or it does not matter to a balancer)
//
//   - Binds 127.0.0.1 only; init.port is the bound HTTP port.
//   - No direct browser WebSockets on the HTTP port (so no direct clients and
//     no announcements), no SQL, no users table (a logged-in session's name
//     is its "username", else "user<id>"), no prevQueue saving, no admin API
//     (no Admin unloads), no rate limits, no video lookups (add with a url
//     queues {"service":"direct","id":url}; a video has no length unless the
//     client sent one, so once playing it ends at the next tick), no votes
//     (vote mode orders nothing), no SponsorBlock segments.
//   - Unload kicks do not broadcast leave events to the remaining clients.
//   - HTTP: GET /api/status, GET /api/auth/grant, POST /api/room/create,
//     POST /api/room/generate, GET /api/room/list, GET /api/room/<name>;
//     anything else is 404. Errors are {"success":false,"error":{"name":...}}.
package otttest
