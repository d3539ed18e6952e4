package runbook

import (
	"errors"
	"fmt"

	"github.com/pgdr/pgdr/pkg/strictyaml"
)

// Action is what a step does: one of a fixed set.
type Action string

// The actions of a step.
const (
	// ActionPause pauses automatic failover of the cluster.
	ActionPause Action = "pause"
	// ActionResume resumes automatic failover.
	ActionResume Action = "resume"
	// ActionSwitchover moves the primary cleanly (no acknowledged commit
	// lost) to a node, into a region or out of a region.
	ActionSwitchover Action = "switchover"
	// ActionWait waits for a condition, up to its timeout.
	ActionWait Action = "wait"
	// ActionBackup takes a backup of a policy tier now.
	ActionBackup Action = "backup"
	// ActionDrill runs a restore drill now.
	ActionDrill Action = "drill"
	// ActionCommand runs a command on a node's agent.
	ActionCommand Action = "command"
	// ActionNotify sends a message through the cluster's notifiers.
	ActionNotify Action = "notify"
)

// actions: every action, in the order errors name them (read only).
var actions = []Action{ActionPause, ActionResume, ActionSwitchover, ActionWait, ActionBackup, ActionDrill, ActionCommand, ActionNotify}

// Actions returns the actions a step may have.
func Actions() []Action { return append([]Action(nil), actions...) }

// Condition names a condition of a wait step or of a validation.
type Condition string

// The conditions.
const (
	// CondLagUnder: at least Count (default 1) healthy replicas (in
	// Region, or outside OutsideRegion, when given) replay within Bytes of
	// the primary.
	CondLagUnder Condition = "lag_under"
	// CondHealthyReplicas: at least Count (default 1) healthy replicas
	// (in Region / outside OutsideRegion when given).
	CondHealthyReplicas Condition = "healthy_replicas"
	// CondReposCaughtUp: every repository of the cluster is caught up.
	CondReposCaughtUp Condition = "repos_caught_up"
	// CondPrimaryInRegion: the primary is in Region (validations only).
	CondPrimaryInRegion Condition = "primary_in_region"
	// CondPrimaryNotInRegion: the primary is not in Region (validations
	// only).
	CondPrimaryNotInRegion Condition = "primary_not_in_region"
)

var (
	waitConds     = []Condition{CondLagUnder, CondHealthyReplicas, CondReposCaughtUp}
	validateConds = []Condition{CondLagUnder, CondHealthyReplicas, CondReposCaughtUp, CondPrimaryInRegion, CondPrimaryNotInRegion}
)

// Runbook is a runbook document. Its string fields may refer to the
// declared parameters as ${name}; Resolve substitutes them.
type Runbook struct {
	Name        string  `yaml:"name"`
	Description string  `yaml:"description,omitempty"`
	Params      []Param `yaml:"params,omitempty"`
	Steps       []Step  `yaml:"steps"`
}

// Param is a declared parameter: given at run time (--param name=value),
// else its Default; a Required one has no default.
type Param struct {
	Name        string `yaml:"name"`
	Required    bool   `yaml:"required,omitempty"`
	Default     string `yaml:"default,omitempty"`
	Description string `yaml:"description,omitempty"`
}

// Step is one step: an action with its fields (Body, inline), an optional
// validation checked once the action succeeded, an optional rollback run
// if a later step fails, and ordering dependencies.
type Step struct {
	ID       string `yaml:"id"`
	Body     `yaml:",inline"`
	Validate *Check `yaml:"validate,omitempty"`
	Rollback *Body  `yaml:"rollback,omitempty"`
	// After names steps this one runs after (declared before or after it).
	After []string `yaml:"after,omitempty,flow"`
}

// Body is what an action needs. Only the fields of its Action may be set.
type Body struct {
	Action Action `yaml:"action"`

	// switchover: exactly one of ToNode, ToRegion, AwayFromRegion, or
	// ToPrevious (rollbacks only: back to the primary from before the
	// step this rollback belongs to).
	ToNode         string `yaml:"to_node,omitempty"`
	ToRegion       string `yaml:"to_region,omitempty"`
	AwayFromRegion string `yaml:"away_from_region,omitempty"`
	ToPrevious     bool   `yaml:"to_previous,omitempty"`

	// wait: the condition (Check, inline; its timeout bounds the wait).
	// Other actions may set Timeout alone: how long their outcome is
	// awaited before the step is judged from the cluster (judge).
	Check `yaml:",inline"`

	// backup: the policy tier.
	Tier string `yaml:"tier,omitempty"`
	// drill, command: the node (drill: optional, the drill scheduler's
	// choice when empty; command: required).
	Node string `yaml:"node,omitempty"`
	// command: the name of a command the node's agent config lists under
	// commands: (the agent runs only what its own config allows).
	Run string `yaml:"run,omitempty"`
	// notify: the message; pause: the reason recorded with the pause.
	Message string `yaml:"message,omitempty"`
}

// Check is a condition with its arguments and timeout. Bytes, Count and
// Timeout are strings so that they may name parameters; Resolve checks
// them after substitution.
type Check struct {
	Condition     Condition `yaml:"condition,omitempty"`
	Bytes         string    `yaml:"bytes,omitempty"`
	Region        string    `yaml:"region,omitempty"`
	OutsideRegion string    `yaml:"outside_region,omitempty"`
	Count         string    `yaml:"count,omitempty"`
	Timeout       string    `yaml:"timeout,omitempty"`
}

// ErrInvalid wraps every refusal of a runbook or of its parameters.
var ErrInvalid = errors.New("invalid runbook")

// Parse decodes a runbook strictly (an unknown key is an error naming its
// path and line; malformed YAML names its line) and validates it
// (Validate). A ${param} reference is checked against the declared params
// here, its value by Resolve at run time.
func Parse(data []byte) (Runbook, error) {
	if len(data) > MaxDocument {
		return Runbook{}, fmt.Errorf("%w: the document is %d bytes, more than %d", ErrInvalid, len(data), MaxDocument)
	}
	var rb Runbook
	if err := strictyaml.Decode(data, &rb); err != nil {
		return Runbook{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := Validate(rb); err != nil {
		return Runbook{}, err
	}
	return rb, nil
}
