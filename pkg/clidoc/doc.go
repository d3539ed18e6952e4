// Package clidoc generates shell completion (bash, zsh) and a man page for
// a command-line program from the program's own command table and each
// command's --help text (its usage lines and the flag package's
// PrintDefaults listing), so that they follow the commands without being
// written by hand. pgdr-agent and pgdrctl expose it as hidden commands:
// `completion bash|zsh` and `man`; scripts/dist.sh ships their output.
package clidoc
