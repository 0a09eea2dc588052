import Foundation
import Store
import Synchronization
import TestSupport
import Testing

@Suite(.ownThread) struct SHA256Tests {
    /// FIPS 180-4 / NIST example vectors.
    @Test func knownAnswers() {
        #expect(SHA256.hex("".utf8) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc".utf8) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// RFC 4231, test cases 2 and 6 (a key longer than a block is hashed first).
    @Test func hmacKnownAnswers() {
        #expect(SHA256.hexString(SHA256.hmac(key: Array("Jefe".utf8), message: "what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(SHA256.hexString(SHA256.hmac(key: [UInt8](repeating: 0xAA, count: 131), message: "Test Using Larger Than Block-Size Key - Hash Key First".utf8))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }
}

/// On both engines: SQLite, and a real PostgreSQL.
@Suite(.ownThread) struct APIKeyTests {
    static func keys(_ dialect: SQLDialect) throws -> APIKeys {
        let connection: any SQLConnection = switch dialect {
        case .sqlite: try SQLiteConnection(path: MigratorTests.temporaryDatabase())
        case .postgres: try PostgresConnection(url: try PostgresServer.running().createDatabase())
        }
        try Migrator.migrate(connection, migrations: try Migration.load(dialect, root: PostgresTests.projectMigrationRoot))
        return APIKeys(connection: connection)
    }

    @Test(arguments: SQLDialect.allCases)
    func aKeyAuthenticatesItsProjectUntilRevoked(dialect: SQLDialect) throws {
        let keys = try Self.keys(dialect)
        let (id, secret) = try keys.create(project: "team-a")
        #expect(secret.hasPrefix("sk-pt-") && secret.count == 54)
        let principal = try #require(try keys.authenticate(secret))
        #expect(principal.projectID == (try keys.project(named: "team-a")) && principal.keyID == id && !principal.isAdmin)
        #expect(try keys.authenticate(secret + "x") == nil)
        #expect(try keys.revoke(id))
        #expect(try keys.authenticate(secret) == nil)
        #expect(try !keys.revoke(id), "a revoked key cannot be revoked again")
    }

    @Test(arguments: SQLDialect.allCases)
    func onlyTheHashIsStored(dialect: SQLDialect) throws {
        let keys = try Self.keys(dialect)
        let (_, secret) = try keys.create(project: "team-a", admin: true)
        let records = try keys.list()
        #expect(records.count == 1 && records[0].isAdmin && records[0].projectName == "team-a")
        #expect(secret.hasPrefix(records[0].prefix))
        let stored = try keys.connection.rows("SELECT * FROM api_keys", [])
        #expect(!stored.flatMap { $0 }.contains(.text(secret)))
    }

    @Test(arguments: SQLDialect.allCases)
    func projectsAreSeparate(dialect: SQLDialect) throws {
        let keys = try Self.keys(dialect)
        let a = try keys.create(project: "a"), b = try keys.create(project: "b")
        #expect(try keys.authenticate(a.secret)?.projectID != (try keys.authenticate(b.secret)?.projectID))
    }

    /// Nodes creating keys for a new project at once agree on one project (PostgreSQL: no
    /// database-wide write lock, so the insert itself must tolerate the race).
    @Test func simultaneousCreatorsAgreeOnTheProject() throws {
        let url = try PostgresServer.running().createDatabase()
        try Migrator.migrate(try PostgresConnection(url: url), migrations: try Migration.load(.postgres, root: PostgresTests.projectMigrationRoot))
        let projects = Mutex<Set<String>>([]), failures = Mutex<[String]>([])
        let threads = (0..<4).map { _ in
            Thread {
                do {
                    let keys = APIKeys(connection: try PostgresConnection(url: url))
                    for _ in 0..<5 {
                        let created = try keys.create(project: "shared")
                        let project = try keys.authenticate(created.secret)?.projectID ?? "none"
                        projects.withLock { _ = $0.insert(project) }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }
        #expect(failures.withLock { $0 } == [])
        #expect(projects.withLock { $0.count } == 1, "one project, whoever created it")
    }
}
