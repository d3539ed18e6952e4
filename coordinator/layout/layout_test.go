package layout

import (
	"strings"
	"testing"
)

func voters(regions ...string) []Coordinator {
	var cs []Coordinator
	for i, r := range regions {
		cs = append(cs, Coordinator{Name: "c" + string(rune('1'+i)), Region: r, Voter: true})
	}
	return cs
}

func TestCheck(t *testing.T) {
	spread := Cluster{Name: "main", Members: []Member{{"pg-a1", "us-east-1", true}, {"pg-a2", "us-east-1", false}, {"pg-b1", "eu-west-1", false}}}
	oneRegion := Cluster{Name: "solo", Members: []Member{{"pg-a1", "us-east-1", true}, {"pg-a2", "us-east-1", false}}}
	unknownReplica := Cluster{Name: "odd", Members: []Member{{"pg-a1", "us-east-1", true}, {"pg-x", "", false}}}
	for _, tc := range []struct {
		name     string
		coords   []Coordinator
		clusters []Cluster
		want     []string // "kind region cluster" of each warning, in order
		contains string   // in the first warning's message
	}{
		{"three regions, one voter each", voters("us-east-1", "eu-west-1", "us-west-2"), []Cluster{spread}, nil, ""},
		{"the old lab: two voters in us-east-1", voters("us-east-1", "us-east-1", "eu-west-1"), []Cluster{spread},
			[]string{"quorum us-east-1 "}, "losing region us-east-1 (coordinators c1, c2) loses the coordinators' quorum: 1 of 3 voters left, quorum needs 2"},
		{"two regions plus a witness", voters("us-east-1", "eu-west-1", "witness-1"), nil, nil, ""},
		{"five voters, 2+2+1", voters("a", "a", "b", "b", "c"), nil, nil, ""},
		{"five voters, 3+2", voters("a", "a", "a", "b", "b"), nil, []string{"quorum a "}, "2 of 5 voters left, quorum needs 3"},
		{"five voters, 2+3: only the region with three", voters("a", "a", "b", "b", "b"), nil, []string{"quorum b "}, ""},
		{"two voters in two regions: losing either loses quorum", voters("a", "b"), nil, []string{"quorum a ", "quorum b "}, ""},
		{"one voter", voters("a"), nil, []string{"quorum a "}, "0 of 1 voters left"},
		{"non-voters count for nothing", append(voters("a", "a", "b"), Coordinator{"c9", "c", false}), nil, []string{"quorum a "}, ""},
		{"a voter without a region", []Coordinator{{"c1", "a", true}, {"c2", "", true}, {"c3", "b", true}}, nil, []string{"no-region  "}, "coordinator c2 has no region"},
		{"no coordinators known", nil, []Cluster{spread}, nil, ""},
		{"a cluster in one region", voters("a", "b", "c"), []Cluster{spread, oneRegion}, []string{"cluster us-east-1 solo"}, "cluster solo: no member is known to be outside region us-east-1"},
		{"a replica with no region does not count as elsewhere", voters("a", "b", "c"), []Cluster{unknownReplica}, []string{"cluster us-east-1 odd"}, ""},
		{"a single-node cluster is not warned about", voters("a", "b", "c"), []Cluster{{Name: "one", Members: []Member{{"pg", "a", true}}}}, nil, ""},
		{"no primary: nothing to judge", voters("a", "b", "c"), []Cluster{{Name: "np", Members: []Member{{"x", "a", false}, {"y", "a", false}}}}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := Check(tc.coords, tc.clusters)
			var got []string
			for _, w := range ws {
				got = append(got, w.Kind+" "+w.Region+" "+w.Cluster)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("warnings %q, want %q (%+v)", got, tc.want, ws)
			}
			if tc.contains != "" && !strings.Contains(ws[0].Message, tc.contains) {
				t.Fatalf("message %q, want it to contain %q", ws[0].Message, tc.contains)
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 7: 4} {
		if got := Quorum(n); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", n, got, want)
		}
	}
}
