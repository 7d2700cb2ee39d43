output "inbox" {
  description = "Upload videos and manifests here."
  value       = "gs://${google_storage_bucket.inbox.name}/"
}

output "work_bucket" {
  description = "Internal objects (parts, preview tiles, output-name claims); no trigger watches it."
  value       = "gs://${google_storage_bucket.work.name}/"
}

output "model_store" {
  description = "Copy model files listed in processors/models/catalog.yaml here."
  value       = "gs://${google_storage_bucket.models.name}/"
}

output "repository" {
  description = "Build Dockerfile.gpu and push it here; then set image_digest to the pushed digest."
  value       = local.repository
}

output "image" {
  description = "The task image every job runs (by digest)."
  value       = local.image
}

output "batch_state_topic" {
  value = google_pubsub_topic.batch_state.id
}

output "function_service_account" {
  value = google_service_account.function.email
}

output "job_service_account" {
  value = google_service_account.job.email
}

output "functions" {
  value = [google_cloudfunctions2_function.on_inbox_object.name, google_cloudfunctions2_function.on_batch_state.name, google_cloudfunctions2_function.on_sweep.name]
}
