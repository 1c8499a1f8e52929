"""Projects: the tenancy unit that owns resources, members and quotas."""
