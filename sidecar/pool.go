package sidecar

import "sync"

// syncBufferPool is a websocket.BufferPool over sync.Pool.
type syncBufferPool struct{ p sync.Pool }

func (b *syncBufferPool) Get() any  { return b.p.Get() }
func (b *syncBufferPool) Put(v any) { b.p.Put(v) }
