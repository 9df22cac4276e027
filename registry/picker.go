package registry

// DefaultCapacity is the capacity counted for a node that sets none.
const DefaultCapacity = 10000

// Spare is how many more clients the node can take: its capacity (or
// DefaultCapacity) less its clients and rooms (an empty room costs its
// monolith something too). It may be negative on an overfull node.
func (n Node) Spare() int {
	c := n.Capacity
	if c <= 0 {
		c = DefaultCapacity
	}
	return c - n.Clients - n.Rooms
}

// Picker spreads handed-over rooms over nodes by spare capacity: each Pick
// goes to the node with the most spare capacity left, which then has cost
// less, so rooms fill the emptiest nodes first until spare capacity is even.
type Picker struct {
	nodes []Node
	spare []int
}

// NewPicker picks among the active nodes of nodes other than exclude.
func NewPicker(nodes []Node, exclude string) *Picker {
	p := &Picker{}
	for _, n := range nodes {
		if n.ID == exclude || n.State != StateActive {
			continue
		}
		p.nodes = append(p.nodes, n)
		p.spare = append(p.spare, n.Spare())
	}
	return p
}

// Pick returns the node for a room of the given cost; false when there is
// no node at all. A full cluster still gets its rooms spread: the least
// overfull node is picked.
func (p *Picker) Pick(cost int) (Node, bool) {
	if len(p.nodes) == 0 {
		return Node{}, false
	}
	best := 0
	for i := range p.spare {
		if p.spare[i] > p.spare[best] {
			best = i
		}
	}
	p.spare[best] -= max(1, cost)
	return p.nodes[best], true
}
