import Foundation
import Synchronization
import Testing
import Threads

@Suite struct DedicatedThreadsTests {
    @Test func oneThreadRunsWorkInOrderAndWaitsUntilIdle() {
        let thread = DedicatedThreads(threads: 1, name: "test-order")
        let seen = Mutex<[Int]>([])
        for i in 0..<200 { thread.run { seen.withLock { $0.append(i) } } }
        thread.waitUntilIdle()
        #expect(seen.withLock { $0 } == Array(0..<200))
        thread.stop()
        thread.join()
    }

    @Test func stopRunsWhatIsQueuedThenEndsTheThreads() {
        let threads = DedicatedThreads(threads: 3, name: "test-stop")
        let count = Atomic<Int>(0)
        for _ in 0..<100 { threads.run { count.add(1, ordering: .relaxed) } }
        threads.stop()
        threads.join()
        #expect(count.load(ordering: .relaxed) == 100)
    }

    @Test func theThreadsRunWorkAtTheSameTime() {
        // Two pieces that each wait for the other finish only if two threads run them at once.
        let threads = DedicatedThreads(threads: 2, name: "test-together")
        let first = DispatchSemaphore(value: 0), second = DispatchSemaphore(value: 0)
        let met = Atomic<Int>(0)
        threads.run { first.signal(); if second.wait(timeout: .now() + 10) == .success { met.add(1, ordering: .relaxed) } }
        threads.run { second.signal(); if first.wait(timeout: .now() + 10) == .success { met.add(1, ordering: .relaxed) } }
        threads.waitUntilIdle()
        #expect(met.load(ordering: .relaxed) == 2)
        threads.stop()
    }

    @Test func tasksPreferringTheExecutorRunOnItsThread() async {
        let thread = DedicatedThreads(threads: 1, name: "test-tasks")
        let own = Mutex<UInt>(0)
        thread.run { own.withLock { $0 = UInt(pthread_self()) } }
        thread.waitUntilIdle()
        let ran = await Task(executorPreference: thread) { UInt(pthread_self()) }.value
        #expect(ran == own.withLock { $0 } && ran != 0)
        thread.stop()
    }

    /// Several threads may wait for the same executor at once (a stop joins while another
    /// caller waits for idle): each must be told, not only the first woken.
    @Test func everyWaiterReturnsNotOnlyTheFirst() {
        let threads = DedicatedThreads(threads: 1, name: "test-waiters")
        let release = DispatchSemaphore(value: 0)
        threads.run { release.wait() }
        let returned = DispatchSemaphore(value: 0)
        let waiters = DedicatedThreads(threads: 3, name: "test-waiting")
        for _ in 0..<3 { waiters.run { threads.waitUntilIdle(); returned.signal() } }
        usleep(50_000)  // let the three block
        release.signal()
        let all = (0..<3).allSatisfy { _ in returned.wait(timeout: .now() + 10) == .success }
        #expect(all, "every waiter returned once the work was done")
        threads.stop()
        waiters.stop()
    }

    struct Unchecked<Value>: @unchecked Sendable { let value: Value }

    /// `CompanionThread` hands over closures that may not escape; Swift checks, when
    /// `withoutActuallyEscaping` ends, that nothing still holds them (and traps if something
    /// does). So a thread must let go of a closure before it reports the run done.
    @Test func aClosureIsReleasedBeforeItsRunIsReported() {
        let thread = DedicatedThreads(threads: 1, name: "test-release")
        let runs = Atomic<Int>(0)
        for _ in 0..<5000 {
            let body: () -> Void = { runs.add(1, ordering: .relaxed) }
            withoutActuallyEscaping(body) { escapable in
                let work = Unchecked(value: escapable)
                thread.run { work.value() }
                thread.waitUntilIdle()
            }
        }
        #expect(runs.load(ordering: .relaxed) == 5000)
        thread.stop()
    }
}
