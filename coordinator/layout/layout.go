package layout

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Coordinator is one coordinator as the layout sees it.
type Coordinator struct {
	Name   string
	Region string
	Voter  bool
}

// Member is one PostgreSQL cluster member as the layout sees it.
type Member struct {
	Name    string
	Region  string
	Primary bool
}

// Cluster is one PostgreSQL cluster.
type Cluster struct {
	Name    string
	Members []Member
}

// Warning kinds.
const (
	// KindQuorum: losing Region loses the coordinators' quorum.
	KindQuorum = "quorum"
	// KindNoRegion: a voter with no region; the layout cannot be judged.
	KindNoRegion = "no-region"
	// KindCluster: losing Region (the primary's) leaves Cluster with no
	// member to promote.
	KindCluster = "cluster"
)

// Warning is one way the loss of a region would take the service down.
type Warning struct {
	Kind    string `json:"kind"`
	Region  string `json:"region,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	Message string `json:"message"`
}

// Quorum is the number of votes a Raft cluster of n voters needs.
func Quorum(n int) int { return n/2 + 1 }

// Check returns what losing any one region would break, sorted by kind,
// region and cluster; none when the layout survives it. Coordinators that
// are not voters count for nothing (they hold no vote).
func Check(coords []Coordinator, clusters []Cluster) []Warning {
	var ws []Warning
	byRegion := map[string][]string{}
	voters := 0
	for _, c := range coords {
		if !c.Voter {
			continue
		}
		voters++
		if c.Region == "" {
			ws = append(ws, Warning{Kind: KindNoRegion, Message: fmt.Sprintf(
				"coordinator %s has no region: whether losing one region loses quorum cannot be judged (set region in its configuration)", c.Name)})
			continue
		}
		byRegion[c.Region] = append(byRegion[c.Region], c.Name)
	}
	q := Quorum(voters)
	for region, names := range byRegion {
		left := voters - len(names)
		if voters > 0 && left < q {
			slices.Sort(names)
			ws = append(ws, Warning{Kind: KindQuorum, Region: region, Message: fmt.Sprintf(
				"losing region %s (coordinators %s) loses the coordinators' quorum: %d of %d voters left, quorum needs %d; place the voters so that no region holds more than %d (three voters: one each in three regions, or two regions plus a witness in a third)",
				region, strings.Join(names, ", "), left, voters, q, voters-q)})
		}
	}
	for _, cl := range clusters {
		var primary *Member
		for i := range cl.Members {
			if cl.Members[i].Primary {
				primary = &cl.Members[i]
			}
		}
		if primary == nil || primary.Region == "" || len(cl.Members) < 2 {
			continue // no primary, no region or a single node: nothing to fail over to anyway
		}
		elsewhere := false
		for _, m := range cl.Members {
			if m.Region != "" && m.Region != primary.Region {
				elsewhere = true
			}
		}
		if !elsewhere {
			ws = append(ws, Warning{Kind: KindCluster, Region: primary.Region, Cluster: cl.Name, Message: fmt.Sprintf(
				"cluster %s: no member is known to be outside region %s, the primary's: losing it leaves no member to promote; add a replica in another region (and set node.region on every agent)",
				cl.Name, primary.Region)})
		}
	}
	slices.SortFunc(ws, func(a, b Warning) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Region, b.Region), cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Message, b.Message))
	})
	return ws
}
