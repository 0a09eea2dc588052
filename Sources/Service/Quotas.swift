import Foundation
import Numerics
import Store

/// Per-project quotas (`ServiceSettings.quotas`): checked when a project adds a file, a
/// model or a job. Over one: 403 `quota_exceeded`, naming the usage and the limit.
enum Quotas {
    static func exceeded(_ what: String, usage: String, limit: String, param: String? = nil) -> APIError {
        APIError(status: 403, message: "quota exceeded: \(what) (using \(usage) of \(limit)); delete some or ask the operator for a higher quota",
                 type: "insufficient_quota", param: param, code: "quota_exceeded")
    }

    /// The project's stored bytes: uploaded files and its models' weights.
    static func storage(project: String, _ resources: Application.Resources) throws -> (files: Int, bytes: Int, models: Int) {
        let files = try resources.files.usage(project: project)
        let own = try resources.models.models(visibleTo: project).filter { $0.projectID == project }
        let modelBytes = own.reduce(0) { $0 + ModelsAPI.weightBytes($1.config) }
        return (files.files, files.bytes + modelBytes, own.count)
    }

    static func checkStorage(project: String, adding bytes: Int, _ resources: Application.Resources) throws {
        let quotas = resources.settings.quotas
        let usage = try storage(project: project, resources)
        guard usage.bytes + bytes <= quotas.storageBytes else {
            throw exceeded("storage", usage: ByteCount.describe(usage.bytes + bytes), limit: ByteCount.describe(quotas.storageBytes))
        }
    }

    /// Before a file is uploaded: the number of files, and (once its size is known) the bytes.
    static func checkFile(project: String, adding bytes: Int, _ resources: Application.Resources) throws {
        let quotas = resources.settings.quotas
        let usage = try storage(project: project, resources)
        guard usage.files < quotas.files else { throw exceeded("files", usage: "\(usage.files)", limit: "\(quotas.files)", param: "file") }
        guard usage.bytes + bytes <= quotas.storageBytes else {
            throw exceeded("storage", usage: ByteCount.describe(usage.bytes + bytes), limit: ByteCount.describe(quotas.storageBytes), param: "file")
        }
    }

    static func checkModel(project: String, adding bytes: Int, _ resources: Application.Resources) throws {
        let quotas = resources.settings.quotas
        let usage = try storage(project: project, resources)
        guard usage.models < quotas.models else { throw exceeded("models", usage: "\(usage.models)", limit: "\(quotas.models)", param: "id") }
        guard usage.bytes + bytes <= quotas.storageBytes else {
            throw exceeded("storage", usage: ByteCount.describe(usage.bytes + bytes), limit: ByteCount.describe(quotas.storageBytes), param: "id")
        }
    }

    static func checkActiveJobs(project: String, _ resources: Application.Resources) throws {
        let limit = resources.settings.quotas.activeJobs
        let active = try resources.jobs.activeJobCount(project: project)
        guard active < limit else {
            throw exceeded("unfinished jobs", usage: "\(active)", limit: "\(limit)")
        }
    }
}
