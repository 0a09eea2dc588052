import Foundation
@testable import Store
import TestSupport
import Testing

@Suite(.ownThread) struct DatabaseTests {
    /// What `Router.addRead` relies on: the reads inside one read transaction share one reader
    /// and one snapshot, so a request's key and its resource cannot come from different states.
    @Test func readsInOneReadTransactionShareTheirSnapshot() throws {
        let database = try Database(path: MigratorTests.temporaryDatabase(), readers: 2)
        try database.withWriter { try $0.execute(script: "CREATE TABLE t (x INTEGER)") }
        try database.write { try $0.execute(script: "INSERT INTO t VALUES (1)") }
        func count() throws -> Int {
            try database.read { connection in
                guard case let .integer(n)? = try connection.rows("SELECT count(*) FROM t", []).first?.first else { return -1 }
                return Int(n)
            }
        }
        let (before, during, sameReader) = try database.readTransaction {
            let before = try count()
            try database.write { try $0.execute(script: "INSERT INTO t VALUES (2)") }
            let during = try count()
            let sameReader = try database.read { a in try database.read { b in a === b } }
            return (before, during, sameReader)
        }
        #expect(before == 1 && during == 1, "a write committed meanwhile is not seen inside the transaction")
        #expect(sameReader)
        #expect(try count() == 2, "and is seen after it")
    }
}
