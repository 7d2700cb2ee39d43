resource "google_storage_bucket" "inbox" {
  name                        = var.inbox_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [google_project_service.apis]

  # Chunk parts and scratch files left by a job that never stitched (failed, cancelled).
  lifecycle_rule {
    condition {
      age            = var.leftover_parts_days
      matches_prefix = ["_dropbatch/"]
    }
    action {
      type = "Delete"
    }
  }

  # Parallel/resumable uploads that were never completed.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
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
