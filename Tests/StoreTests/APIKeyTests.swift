import Foundation
import Store
import Testing

@Suite struct SHA256Tests {
    /// FIPS 180-4 / NIST example vectors.
    @Test func knownAnswers() {
        #expect(SHA256.hex("".utf8) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc".utf8) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

@Suite struct APIKeyTests {
    static func keys() throws -> APIKeys {
        let connection = try SQLiteConnection(path: MigratorTests.temporaryDatabase())
        try Migrator.migrate(connection, migrations: try MigratorTests.projectMigrations)
        return APIKeys(connection: connection)
    }

    @Test func aKeyAuthenticatesItsProjectUntilRevoked() throws {
        let keys = try Self.keys()
        let (id, secret) = try keys.create(project: "team-a")
        #expect(secret.hasPrefix("sk-pt-") && secret.count == 54)
        let principal = try #require(try keys.authenticate(secret))
        #expect(principal.projectID == (try keys.project(named: "team-a")) && principal.keyID == id && !principal.isAdmin)
        #expect(try keys.authenticate(secret + "x") == nil)
        #expect(try keys.revoke(id))
        #expect(try keys.authenticate(secret) == nil)
        #expect(try !keys.revoke(id), "a revoked key cannot be revoked again")
    }

    @Test func onlyTheHashIsStored() throws {
        let keys = try Self.keys()
        let (_, secret) = try keys.create(project: "team-a", admin: true)
        let records = try keys.list()
        #expect(records.count == 1 && records[0].isAdmin && records[0].projectName == "team-a")
        #expect(secret.hasPrefix(records[0].prefix))
        let stored = try SQLiteConnection(path: keys.connectionPath).rows("SELECT * FROM api_keys")
        #expect(!stored.flatMap { $0 }.contains(.text(secret)))
    }

    @Test func projectsAreSeparate() throws {
        let keys = try Self.keys()
        let a = try keys.create(project: "a"), b = try keys.create(project: "b")
        #expect(try keys.authenticate(a.secret)?.projectID != (try keys.authenticate(b.secret)?.projectID))
    }
}
