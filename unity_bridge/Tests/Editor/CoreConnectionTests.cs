using System;
using LpmNpc.Core;
using NUnit.Framework;

namespace LpmNpc.Tests
{
    [TestFixture]
    public class ConnectionSpreadTests
    {
        [Test]
        public void NewStreamsTakeTheLeastUsedConnection()
        {
            var spread = new ConnectionSpread(3);
            Assert.AreEqual(0, spread.Acquire());
            Assert.AreEqual(1, spread.Acquire());
            Assert.AreEqual(2, spread.Acquire());
            Assert.AreEqual(0, spread.Acquire());
            spread.Release(1);                       // an NPC on connection 1 went away
            Assert.AreEqual(1, spread.Acquire());    // the next one takes its place
            Assert.AreEqual(2, spread.OpenOn(0));
            Assert.AreEqual(1, spread.OpenOn(1));
            Assert.AreEqual(1, spread.OpenOn(2));
        }

        [Test]
        public void OneConnectionIsSharedByEveryStream()
        {
            var spread = new ConnectionSpread(1);
            for (int i = 0; i < 5; i++) Assert.AreEqual(0, spread.Acquire());
            Assert.AreEqual(5, spread.OpenOn(0));
        }

        [Test]
        public void BadCountsAndIndicesAreRefused()
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => new ConnectionSpread(0));
            var spread = new ConnectionSpread(2);
            Assert.Throws<ArgumentOutOfRangeException>(() => spread.Release(2));
            spread.Release(0);                       // releasing more than was taken stays at zero
            Assert.AreEqual(0, spread.OpenOn(0));
        }
    }
}
