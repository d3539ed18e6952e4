// Package terraform holds no code: it tests the Terraform module in aws/
// offline. Every .tf file must parse (hashicorp/hcl) and be formatted
// (hclwrite.Format, and `terraform fmt -check` when terraform is
// installed; never init, so no provider is downloaded), and the module's
// structure is checked: three regional provider aliases and buckets,
// versioning, default encryption, public access block, lifecycle, the
// repos_yaml output with the agent configuration's repos[] fields, and an
// agent policy that deletes no WAL or backup.
package terraform
