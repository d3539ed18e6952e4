output "buckets" {
  description = "Per region: the main bucket and the monthly (Object Lock) bucket, null when disabled."
  value = {
    for region, b in local.buckets : region => {
      bucket         = b.bucket
      monthly_bucket = b.monthly_bucket
    }
  }
}

output "agent_role_arns" {
  description = "Per cluster: the agents' role (read and write, no deletion of WAL or backups)."
  value       = { for c, r in aws_iam_role.agent : c => r.arn }
}

output "expiry_role_arns" {
  description = "Per cluster: the role that runs pgdr-agent expire (the agent's rights plus deletion)."
  value       = { for c, r in aws_iam_role.expiry : c => r.arn }
}

# The agent configuration's repos[] for an agent in each region: its own
# region's bucket is the sync repository, the other two regions' buckets
# are async copies (docs/repocopy.md), and the long-retention repository
# (archive-<region>) and the monthly bucket (monthly-<region>, with Object
# Lock) are async too. Name archive-<region> and monthly-<region> in the
# backup policy's long-retention tiers (repos: [...], docs/policy.md).
# Credentials come from the instance role (agent_role_arns): no key files.
output "repos_yaml" {
  description = "Per region: the repos: section of /etc/pgdr/agent.yaml for the agents in that region."
  value = {
    for region, b in local.buckets : region => join("", [
      "# pgdr-agent repos for agents in ${region} (terraform output repos_yaml)\n",
      yamlencode({
        repos = concat(
          [{ name = "s3-${region}", url = "s3://${b.bucket}/${var.prefix}", mode = "sync", s3 = { region = region } }],
          [for other, ob in local.buckets : { name = "s3-${other}", url = "s3://${ob.bucket}/${var.prefix}", mode = "async", s3 = { region = other } } if other != region],
          [{ name = "archive-${region}", url = "s3://${b.bucket}/${var.archive_prefix}", mode = "async", s3 = { region = region } }],
          var.monthly_object_lock.enabled ? [{ name = "monthly-${region}", url = "s3://${b.monthly_bucket}/${var.prefix}", mode = "async", s3 = { region = region } }] : [],
        )
      }),
    ])
  }
}
