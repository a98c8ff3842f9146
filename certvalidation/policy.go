package certvalidation

import (
	"crypto/x509"
	"fmt"
	"slices"
)

// anyPolicy is the special policy OID 2.5.29.32.0 (RFC 5280 section
// 4.2.1.4).
const anyPolicy = "2.5.29.32.0"

// policyNode is a node of the valid_policy_graph of RFC 9618, which
// replaces the valid_policy_tree of RFC 5280 section 6.1.2 (a) with a
// graph of the same meaning whose size grows linearly, not exponentially,
// with the path: one node per policy and depth, several parents allowed.
type policyNode struct {
	policy   string
	expected []string // expected_policy_set
	parents  []*policyNode
	children int
}

// policyGraph is the valid_policy_graph; levels[d] holds the nodes of
// depth d. nil means NULL.
type policyGraph struct {
	levels [][]*policyNode
	max    int // bound on nodes per level
}

func newPolicyGraph(maxNodes int) *policyGraph {
	root := &policyNode{policy: anyPolicy, expected: []string{anyPolicy}}
	return &policyGraph{levels: [][]*policyNode{{root}}, max: maxNodes}
}

func (g *policyGraph) depth() int { return len(g.levels) - 1 }

func (g *policyGraph) level(d int) []*policyNode { return g.levels[d] }

func find(level []*policyNode, policy string) *policyNode {
	for _, n := range level {
		if n.policy == policy {
			return n
		}
	}
	return nil
}

func link(child, parent *policyNode) {
	child.parents = append(child.parents, parent)
	parent.children++
}

// processCert is section 6.1.3 (d) for a certificate with a
// certificatePolicies extension. anyAllowed is "inhibit_anyPolicy > 0, or
// i < n and the certificate is self-issued". It returns an error only when
// the graph would exceed its bound.
func (g *policyGraph) processCert(policies []string, anyAllowed bool) error {
	prev := g.levels[len(g.levels)-1]
	var cur []*policyNode
	hasAny := false
	// (d)(1): each policy other than anyPolicy.
	for _, p := range policies {
		if p == anyPolicy {
			hasAny = true
			continue
		}
		if find(cur, p) != nil {
			continue // a duplicate in the extension
		}
		n := &policyNode{policy: p, expected: []string{p}}
		for _, parent := range prev {
			if slices.Contains(parent.expected, p) {
				link(n, parent)
			}
		}
		if len(n.parents) == 0 {
			// (d)(1)(ii): no parent expects p; attach it under anyPolicy.
			if a := find(prev, anyPolicy); a != nil {
				link(n, a)
			}
		}
		if len(n.parents) > 0 {
			cur = append(cur, n)
		}
	}
	// (d)(2): anyPolicy, if allowed, gives every expected policy that has
	// no node yet a node of its own.
	if hasAny && anyAllowed {
		for _, parent := range prev {
			for _, e := range parent.expected {
				n := find(cur, e)
				if n == nil {
					n = &policyNode{policy: e, expected: []string{e}}
					cur = append(cur, n)
				}
				if !slices.Contains(n.parents, parent) {
					link(n, parent)
				}
			}
		}
	}
	if g.max > 0 && len(cur) > g.max {
		return errLimit{fmt.Sprintf("policy graph bound: more than %d certificate policies at one depth", g.max)}
	}
	g.levels = append(g.levels, cur)
	// (d)(3): prune the nodes left without children.
	g.prune()
	return nil
}

// prune deletes, from the deepest level up, the nodes of depth below the
// last that have no children (section 6.1.3 (d)(3), 6.1.4 (b)(2)).
func (g *policyGraph) prune() {
	for d := len(g.levels) - 2; d >= 0; d-- {
		kept := g.levels[d][:0]
		for _, n := range g.levels[d] {
			if n.children > 0 {
				kept = append(kept, n)
				continue
			}
			for _, p := range n.parents {
				p.children--
			}
		}
		g.levels[d] = kept
	}
}

// empty reports whether the graph is NULL: no node at the current depth.
func (g *policyGraph) empty() bool {
	return len(g.levels[len(g.levels)-1]) == 0
}

// applyMappings is section 6.1.4 (b): with policy mapping allowed, a node
// for an issuerDomainPolicy expects the mapped subject policies (a node
// created under anyPolicy if needed); otherwise those nodes are deleted.
func (g *policyGraph) applyMappings(mappings []x509.PolicyMapping, allowed bool) {
	if len(mappings) == 0 {
		return
	}
	d := len(g.levels) - 1
	level := g.levels[d]
	mapped := map[string][]string{}
	var order []string
	for _, m := range mappings {
		idp := m.IssuerDomainPolicy.String()
		if _, ok := mapped[idp]; !ok {
			order = append(order, idp)
		}
		sdp := m.SubjectDomainPolicy.String()
		if !slices.Contains(mapped[idp], sdp) {
			mapped[idp] = append(mapped[idp], sdp)
		}
	}
	if !allowed {
		kept := level[:0]
		for _, n := range level {
			if _, ok := mapped[n.policy]; ok {
				for _, p := range n.parents {
					p.children--
				}
				continue
			}
			kept = append(kept, n)
		}
		g.levels[d] = kept
		g.prune()
		return
	}
	anyNode := find(level, anyPolicy)
	for _, idp := range order {
		if n := find(level, idp); n != nil {
			n.expected = mapped[idp]
			continue
		}
		if anyNode != nil {
			n := &policyNode{policy: idp, expected: mapped[idp]}
			for _, p := range anyNode.parents {
				link(n, p)
			}
			level = append(level, n)
		}
	}
	g.levels[d] = level
}

// userConstrained computes section 6.1.5 (g): the policies of the leaf
// that are also acceptable to the user. userSet empty means anyPolicy. The
// result is empty when the intersection is NULL.
//
// In the graph, a node at depth n belongs to the intersection when some
// path from the root reaches it whose first node other than anyPolicy is
// in the user's set (or that has no such node: all anyPolicy), which is
// what pruning the valid_policy_node_set of (g)(iii) leaves.
func (g *policyGraph) userConstrained(userSet []string) []string {
	if g.empty() {
		return nil
	}
	leaves := g.levels[len(g.levels)-1]
	if len(userSet) == 0 || slices.Contains(userSet, anyPolicy) {
		out := make([]string, 0, len(leaves))
		for _, n := range leaves {
			out = append(out, n.policy)
		}
		return out
	}
	// mode: 1 reached through anyPolicy nodes only, 2 through a first
	// non-anyPolicy node in the user set.
	type mode uint8
	modes := map[*policyNode]mode{g.levels[0][0]: 1}
	var out []string
	for d := 1; d < len(g.levels); d++ {
		for _, n := range g.levels[d] {
			var m mode
			for _, p := range n.parents {
				pm := modes[p]
				switch {
				case pm&2 != 0:
					m |= 2
				case pm&1 != 0 && n.policy == anyPolicy:
					m |= 1
				case pm&1 != 0 && slices.Contains(userSet, n.policy):
					m |= 2
				}
			}
			modes[n] = m
			if d == len(g.levels)-1 {
				switch {
				case n.policy == anyPolicy && m&1 != 0:
					// (g)(iii)(3): anyPolicy at depth n stands for every
					// policy of the user set.
					for _, u := range userSet {
						if !slices.Contains(out, u) {
							out = append(out, u)
						}
					}
				case n.policy != anyPolicy && m&2 != 0:
					if !slices.Contains(out, n.policy) {
						out = append(out, n.policy)
					}
				}
			}
		}
	}
	return out
}
