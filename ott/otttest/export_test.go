package otttest

// TickNow runs the room tick at once, as the periodic one does: tests set a
// long TickInterval and drive the ticks with it.
func (m *Monolith) TickNow() { m.tick() }
