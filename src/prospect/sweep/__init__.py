"""prospect.sweep"""
