resource "google_storage_bucket" "inbox" {
  name                        = var.inbox_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]

  # XML API multipart uploads (S3-compatible tools) that were never completed: their parts are
  # stored and billed until aborted. Only those: a JSON API resumable upload (gsutil, gcloud,
  # the client libraries, the console) that is never finalised is no object at all, and its
  # session lapses a week after it began; no lifecycle rule can see it, none is needed.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

# Internal objects (DROPBATCH_WORK_BUCKET): chunk parts, preview tiles and output-name claims,
# named `<inbox bucket>/…`. No trigger watches it, so a job's own writes invoke nothing.
resource "google_storage_bucket" "work" {
  name                        = local.work_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]

  # Parts and tiles of a job that never stitched (failed, cancelled); a stitch deletes its
  # own. Not the claims (`<inbox>/outputs/`): they hold an output's name while its manifest
  # is in the inbox, however old.
  lifecycle_rule {
    condition {
      age            = var.leftover_parts_days
      matches_prefix = ["${var.inbox_bucket}/jobs/"]
    }
    action {
      type = "Delete"
    }
  }
}

locals {
  work_bucket = coalesce(var.work_bucket, "${var.inbox_bucket}-work")
}

resource "google_storage_bucket" "models" {
  name                        = var.models_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]
}

# Where Terraform uploads the zipped function source for Cloud Build.
resource "google_storage_bucket" "function_source" {
  name                        = "${var.project_id}-dropbatch-function-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]
}
