# The spec's "Trigger Types" examples, unchanged but for the import lines.
from nexios_contrib_scheduler import IntervalTrigger

# Every 30 seconds
IntervalTrigger(seconds=30)
# Every 5 minutes
IntervalTrigger(minutes=5)
# Every 2 hours
IntervalTrigger(hours=2)
# Every 1 day
IntervalTrigger(days=1)
# Combined: every 1 hour and 15 minutes
IntervalTrigger(hours=1, minutes=15)

from nexios_contrib_scheduler import CronTrigger

# Every minute
CronTrigger("* * * * *")
# Every hour at minute 0
CronTrigger("0 * * * *")
# Daily at midnight
CronTrigger("0 0 * * *")
# Every weekday at 9 AM
CronTrigger("0 9 * * 1-5")
# Every 15 minutes
CronTrigger("*/15 * * * *")

from nexios_contrib_scheduler import DateTimeTrigger

# Run on December 25, 2026 at 10:30 AM UTC
DateTimeTrigger("2026-12-25T10:30:00")
