"""prospect.data"""
