// Package divergenceid owns what a divergence report's id is: the agent
// makes it (agent/divergence) and stores the report under it in the
// repositories (pkg/repo's keys), the coordinators record it in the
// history, and pgdrctl divergence show takes it as an argument; all four
// accept the same ids, and only ids that are safe in an object key.
package divergenceid
