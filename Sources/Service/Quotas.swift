import Foundation
import Numerics
import Jobs
import Store

/// Per-project quotas (`ServiceSettings.quotas`): checked when a project adds a file, a
/// model or a job. Over one: 403 `quota_exceeded`, naming the usage and the limit.
enum Quotas {
    /// What is being added, besides its bytes.
    enum Addition { case file, model }

    static func exceeded(_ what: String, usage: String, limit: String, param: String? = nil) -> APIError {
        APIError(status: 403, message: "quota exceeded: \(what) (using \(usage) of \(limit)); delete some or ask the operator for a higher quota",
                 type: "insufficient_quota", param: param, code: "quota_exceeded")
    }

    /// Before a file or model is added (its bytes, when known): the count of its kind, and storage,
    /// which holds uploaded files and the project's models' weights.
    static func check(_ addition: Addition, project: String, adding bytes: Int, _ resources: Application.Resources) throws {
        let quotas = resources.settings.quotas
        let files = try resources.files.usage(project: project)
        let models = try resources.models.models(visibleTo: project, created: CreatedRange()).filter { $0.projectID == project }
        let param = addition == .model ? "id" : "file"
        switch addition {
        case .file where files.files >= quotas.files:
            throw exceeded("files", usage: "\(files.files)", limit: "\(quotas.files)", param: param)
        case .model where models.count >= quotas.models:
            throw exceeded("models", usage: "\(models.count)", limit: "\(quotas.models)", param: param)
        default:
            break
        }
        let stored = files.bytes + models.reduce(0) { $0 + ModelsAPI.weightBytes($1.config) } + bytes
        guard stored <= quotas.storageBytes else {
            throw exceeded("storage", usage: ByteCount.describe(stored), limit: ByteCount.describe(quotas.storageBytes), param: param)
        }
    }

    static func checkActiveJobs(project: String, _ resources: Application.Resources) throws {
        let limit = resources.settings.quotas.activeJobs
        let active = try resources.jobs.activeJobCount(project: project)
        guard active < limit else { throw exceeded("unfinished jobs", usage: "\(active)", limit: "\(limit)") }
    }
}
