variable "name" {
  description = "The bucket's name (the monthly bucket is \"<name>-monthly\")."
  type        = string
}

variable "archive_prefix" {
  description = "The long-retention repository's prefix, moved to colder storage classes."
  type        = string
}

variable "archive_transitions" {
  description = "Lifecycle transitions of the long-retention objects."
  type = list(object({
    days          = number
    storage_class = string
  }))
}

variable "noncurrent_version_days" {
  description = "Days previous object versions are kept."
  type        = number
}

variable "monthly_object_lock" {
  description = "Object Lock for the monthly bucket (made only when enabled)."
  type = object({
    enabled        = bool
    mode           = optional(string, "GOVERNANCE")
    retention_days = optional(number, 400)
  })
}

variable "kms_key_arn" {
  description = "KMS key for default encryption; null: SSE-S3."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow destroying a non-empty bucket."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
