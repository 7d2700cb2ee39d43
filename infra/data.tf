resource "google_firestore_database" "status" {
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"
  depends_on  = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "images" {
  repository_id = "dropbatch"
  location      = var.region
  format        = "DOCKER"
  description   = "The dropbatch GPU task image (Dockerfile.gpu)."
  depends_on    = [google_project_service.apis]
}

resource "google_pubsub_topic" "batch_state" {
  name       = "dropbatch-batch-state"
  depends_on = [google_project_service.apis]
}

# Cloud Scheduler publishes here; on_sweep ends manifests whose inputs never arrived.
resource "google_pubsub_topic" "sweep" {
  name       = "dropbatch-sweep"
  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "sweep" {
  name        = "dropbatch-sweep"
  description = "Ends waiting manifests whose inputs did not arrive within DROPBATCH_INPUT_WAIT_SECONDS."
  region      = var.region
  schedule    = var.sweep_schedule
  pubsub_target {
    topic_name = google_pubsub_topic.sweep.id
    data       = base64encode("sweep")
  }
  depends_on = [google_project_service.apis]
}
