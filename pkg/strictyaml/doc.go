// Package strictyaml decodes the agent's and the coordinator's YAML files
// with unknown keys refused, and says what is wrong in the file's own terms:
// the dotted key path as the documentation writes it (wal.push_concurrency,
// repos[1].s3.endpoint), its line, and the nearest known key, instead of the
// Go type the YAML library names.
package strictyaml
